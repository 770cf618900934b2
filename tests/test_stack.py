"""`make up` as a user runs it: a whole second stack (its own var dir and
ports), brought up twice, with supervised processes killed and restarted,
stopped and started again with its data kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from streaming.testing import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.services]

ROOT = Path(settings.BASE_DIR)
SLOT = int(os.environ.get("TEST_SLOT", "0") or 0)
PORTS = {"PG_PORT": 45432 + 100 * SLOT, "REDIS_PORT": 46379 + 100 * SLOT, "KAFKA_PORT": 49092 + 100 * SLOT,
         "KAFKA_CONTROLLER_PORT": 49093 + 100 * SLOT, "WEB_PORT": 48000 + 100 * SLOT,
         "METRICS_PORT_BASE": 49100 + 100 * SLOT}


@pytest.fixture(scope="module")
def stack():
    env = {key: value for key, value in os.environ.items()
           if key not in {"TIMESCALE_URL", "DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "READY_CONSUMERS",
                          "KAFKA_TOPIC_PREFIX", "PG_FSYNC"}}
    env.update({key: str(value) for key, value in PORTS.items()})
    env.update({"FINSTREAM_IGNORE_DOTENV": "1", "FINSTREAM_VAR": str(ROOT / "var" / f"test-stack-{SLOT}"),
                "DJANGO_SUPERUSER_PASSWORD": "stack-test", "PG_FSYNC": "off", "KAFKA_HEAP": "384m"})

    def run(*args: str) -> str:
        result = subprocess.run([str(ROOT / "deploy" / "stack.sh"), *args], env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"stack.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    run("clean")
    try:
        yield run
    finally:
        run("clean")


def get(path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['WEB_PORT']}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def pids(run) -> dict[str, int]:
    table = {}
    for line in run("status").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "RUNNING" and parts[2] == "pid":
            table[parts[0]] = int(parts[3].rstrip(","))
    return table


def aapl_trades() -> list[dict]:
    status, body = get("/api/v1/trades/AAPL?limit=1000")
    return body.get("trades", []) if status == 200 else []


def test_make_up_brings_everything_up_and_a_second_run_changes_nothing(stack):
    first = stack("up")
    assert "FinStream is up." in first
    status, ready = get("/ready")
    assert status == 200 and all(check["ok"] for check in ready["checks"].values()), ready
    wait_for(lambda: aapl_trades(), timeout=60, interval=0.5, what="trades of AAPL in the API")
    before = pids(stack)
    assert {"app:web", "app:simulator", "app:build_candles", "app:ingest_quotes", "app:detect_anomalies",
            "app:celery_worker", "app:celery_beat", "infra:postgres", "infra:redis", "infra:kafka"} <= set(before)

    second = stack("up")
    assert "FinStream is up." in second
    assert "initdb" not in second and "formatting" not in second and "installing" not in second
    assert pids(stack) == before, "a second `make up` restarted processes"


def test_a_killed_process_is_restarted(stack):
    before = pids(stack)
    for name in ("app:build_candles", "app:web"):
        os.kill(before[name], signal.SIGKILL)
    wait_for(lambda: all(pids(stack).get(n, before[n]) != before[n] for n in ("app:build_candles", "app:web")),
             timeout=60, interval=0.5, what="the killed processes to come back")
    wait_for(lambda: get("/ready")[0] == 200, timeout=60, interval=0.5, what="ready again after the kills")


def test_down_and_up_keep_the_stored_data(stack):
    kept = {t["id"] for t in wait_for(aapl_trades, timeout=60, what="trades")}
    stack("down")
    stack("up")
    wait_for(lambda: get("/ready")[0] == 200, timeout=60, what="ready after down and up")
    status, body = get("/api/v1/trades/AAPL?limit=1000")
    assert status == 200
    newest_before = min(kept)  # any id that was stored must still be found among the stored trades
    import psycopg

    with psycopg.connect(f"postgresql://finstream:finstream@127.0.0.1:{PORTS['PG_PORT']}/finstream") as db:
        stored = {row[0] for row in db.execute("SELECT trade_id FROM market_trade WHERE trade_id = ANY(%s)",
                                               [list(kept)])}
    assert stored == kept, newest_before
