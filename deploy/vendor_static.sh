#!/usr/bin/env bash
# The dashboard's front-end libraries, from npm into static/vendor/ (no CDN at
# run time: the pages work offline). Versions are pinned, with their integrity
# hashes, by deploy/static-vendor/package.json and package-lock.json.
#
#   deploy/vendor_static.sh          install when the lock changed or a file is missing (idempotent)
#   deploy/vendor_static.sh --force  install again
#
# The copied files are committed too, so a checkout serves the dashboard
# without npm; this script is how they are made and upgraded: edit the
# versions in package.json, `npm install --package-lock-only` in
# deploy/static-vendor/, run this script, commit static/vendor/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SPEC=$ROOT/deploy/static-vendor
WORK=$ROOT/var/npm
VENDOR=$ROOT/static/vendor
STAMP=$VENDOR/.package-lock.sha256

# npm package path -> name in static/vendor/
FILES=(
  "htmx.org/dist/htmx.min.js:htmx.min.js"
  "htmx.org/LICENSE:htmx.LICENSE.txt"
  "lightweight-charts/dist/lightweight-charts.standalone.production.js:lightweight-charts.standalone.production.js"
  "lightweight-charts/LICENSE:lightweight-charts.LICENSE.txt"
)

fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

want=$(sha256sum "$SPEC/package-lock.json" | cut -d' ' -f1)
if [ "${1:-}" != --force ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  complete=1
  for entry in "${FILES[@]}"; do [ -s "$VENDOR/${entry#*:}" ] || complete=0; done
  if [ "$complete" = 1 ]; then
    echo "==> Static vendor files: up to date (static/vendor/)"
    exit 0
  fi
fi

command -v npm >/dev/null || fail "npm is needed to refresh static/vendor/ (apt-get install npm), or restore the committed files: git checkout static/vendor"
echo "==> Static vendor files: npm ci (deploy/static-vendor/package-lock.json) into var/npm, copying to static/vendor/"
rm -rf "$WORK"
mkdir -p "$WORK" "$VENDOR"
cp "$SPEC/package.json" "$SPEC/package-lock.json" "$WORK/"
# `npm ci` installs exactly the lock (versions and integrity hashes) and runs no package scripts.
npm ci --prefix "$WORK" --ignore-scripts --no-audit --no-fund --loglevel=error \
  || fail "npm ci failed in $WORK: is the npm registry reachable?"
for entry in "${FILES[@]}"; do
  source=$WORK/node_modules/${entry%%:*}
  [ -s "$source" ] || fail "$source is missing: did the package layout change? update FILES in $0"
  cp "$source" "$VENDOR/${entry#*:}"
done
echo "$want" >"$STAMP"
echo "==> Static vendor files: $(cd "$VENDOR" && ls | tr '\n' ' ')"
