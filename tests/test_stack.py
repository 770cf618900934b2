"""`make up` as a user runs it: a whole second stack (its own var dir and
ports), brought up twice, with supervised processes killed and restarted,
stopped and started again with its data kept."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from streaming.testing import metric_sum, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.services]

ROOT = Path(settings.BASE_DIR)
SLOT = int(os.environ.get("TEST_SLOT", "0") or 0)
PORTS = {"PG_PORT": 45432 + 100 * SLOT, "REDIS_PORT": 46379 + 100 * SLOT, "KAFKA_PORT": 49092 + 100 * SLOT,
         "KAFKA_CONTROLLER_PORT": 49093 + 100 * SLOT, "WEB_PORT": 48000 + 100 * SLOT,
         "METRICS_PORT_BASE": 49100 + 100 * SLOT}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = {key: value for key, value in os.environ.items()
           if key not in {"TIMESCALE_URL", "DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "READY_CONSUMERS",
                          "KAFKA_TOPIC_PREFIX", "PG_FSYNC"}}
    env.update({key: str(value) for key, value in PORTS.items()})
    env.update({"FINSTREAM_IGNORE_DOTENV": "1", "FINSTREAM_VAR": str(ROOT / "var" / f"test-stack-{SLOT}"),
                "DJANGO_SUPERUSER_PASSWORD": "stack-test", "PG_FSYNC": "off", "KAFKA_HEAP": "384m"})

    def run(*args: str, returncodes: tuple[int, ...] = (0,), **changed: str) -> str:
        result = subprocess.run([str(ROOT / "deploy" / "stack.sh"), *args], env={**env, **changed},
                                capture_output=True, text=True, timeout=600)
        assert result.returncode in returncodes, (f"stack.sh {' '.join(args)} exited {result.returncode}:\n"
                                                  f"{result.stdout}\n{result.stderr}")
        return result.stdout

    run("clean")
    try:
        yield run
    finally:
        # The processes' logs outlive the clean-up, for a failure's post-mortem (pytest keeps the last runs').
        if (logs := Path(env["FINSTREAM_VAR"]) / "log").is_dir():
            shutil.copytree(logs, tmp_path_factory.mktemp("stack-logs"), dirs_exist_ok=True)
        run("clean")


def get(path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['WEB_PORT']}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def pids(run) -> dict[str, int]:
    table = {}
    for line in run("status", returncodes=(0, 1)).splitlines():  # 1: not ready (yet)
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


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return response.read().decode()
    except OSError:
        return ""


def test_every_process_serves_its_metrics_and_the_spec_metrics_move(stack):
    base = PORTS["METRICS_PORT_BASE"]
    ports = {"simulator": base + 1, "build_candles": base + 2, "ingest_quotes": base + 3, "detect_anomalies": base + 4,
             "relay_streams": base + 5, "celery_worker": base + 6}
    for process, port in ports.items():
        wait_for(lambda port=port: "# TYPE" in scrape(port), timeout=60, interval=0.5,
                 what=f"{process}'s metrics on :{port}")
    assert "finstream_celery_tasks_total" in scrape(ports["celery_worker"])

    def processed() -> tuple[float, float]:
        text = scrape(ports["build_candles"])
        return (metric_sum(text, "finstream_messages_processed_total", consumer="build_candles",
                           outcome="processed"),
                metric_sum(text, "finstream_processing_latency_seconds_count", consumer="build_candles"))

    before = processed()
    wait_for(lambda: all(now > then for now, then in zip(processed(), before, strict=True)), timeout=60,
             interval=0.5, what="build_candles' processed count and latency histogram to move")

    # A price spike into the stack's own broker: an alert stored and counted, and in the API.
    from confluent_kafka import Producer

    from streaming.schemas import Trade, encode

    alerts_before = metric_sum(scrape(ports["detect_anomalies"]), "finstream_alerts_total", type="price_spike")
    status, body = get("/api/v1/trades/JPM?limit=1")
    assert status == 200 and body["trades"], body
    spike = Trade(id="stack-spike-1", symbol="JPM", seq=0, side="buy", size=Decimal(500),
                  ts=datetime.now(UTC) + timedelta(seconds=1),
                  price=(Decimal(body["trades"][0]["price"]) * Decimal("1.3")).quantize(Decimal("0.01")))
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{PORTS['KAFKA_PORT']}"})
    produced = time.monotonic()
    producer.produce("market.trades", encode(spike), b"JPM")
    assert producer.flush(30) == 0
    wait_for(lambda: metric_sum(scrape(ports["detect_anomalies"]), "finstream_alerts_total", type="price_spike")
             > alerts_before, timeout=30, interval=0.05, what="finstream_alerts_total to count the spike")
    counted = time.monotonic() - produced
    status, body = get("/api/v1/alerts?symbol=JPM&limit=5")
    [alert] = [a for a in body["alerts"] if a["type"] == "price_spike" and a["time"].startswith(
        spike.ts.strftime("%Y-%m-%dT%H:%M:%S"))]
    print(f"price spike produced -> alert stored, published and counted in {counted:.2f} s")


def test_prometheus_with_the_shipped_scrape_config_finds_every_target_up(stack, tmp_path):
    # deploy/prometheus/prometheus.yml as it is, but pointed at this stack's ports (the compose
    # stack's 9101... are METRICS_PORT_BASE + 1... here) and scraping every second.
    import shutil
    import socket

    import yaml

    if not shutil.which("prometheus"):
        pytest.skip("Debian's prometheus package is not installed (deploy/stack.sh install adds it)")
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def here(target: str) -> str:
        compose_port = int(target.rsplit(":", 1)[1])
        fixed = {8000: PORTS["WEB_PORT"], 9090: port}
        return f"127.0.0.1:{fixed.get(compose_port, compose_port - 9100 + PORTS['METRICS_PORT_BASE'])}"

    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config.pop("rule_files", None)  # promtool checks the rules (tests/test_deploy_artifacts.py)
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            group["targets"] = [here(target) for target in group["targets"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    server = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                               f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def targets() -> dict[str, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5) as response:
                    active = json.loads(response.read())["data"]["activeTargets"]
            except OSError:
                return {}
            return {target["labels"]["job"]: target["health"] for target in active}

        jobs = {job["job_name"] for job in config["scrape_configs"]}
        found = wait_for(lambda: (lambda t: t if set(t) == jobs and all(h != "unknown" for h in t.values())
                                  else None)(targets()), timeout=60, interval=0.5, what="Prometheus to scrape")
        assert found == dict.fromkeys(jobs, "up"), found
    finally:
        server.terminate()
        server.wait(timeout=30)


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


def test_ctl_reaches_the_stacks_supervisord_and_a_changed_configuration_restarts_it(stack):
    stack("ctl", "stop", "app:simulator")
    assert "app:simulator" not in pids(stack)
    stack("status")  # the simulator is no consumer /ready waits for
    stack("ctl", "stop", "app:web")
    assert "web: /ready does not answer" in stack("status", returncodes=(1,))
    unchanged = stack("up")
    assert "restarting" not in unchanged and "app:simulator" in pids(stack)
    before = pids(stack)
    changed = stack("up", TRADES_PER_SECOND="150")
    assert "configuration (.env or the environment) changed" in changed and "FinStream is up." in changed
    after = pids(stack)
    assert set(after) == set(before) and all(after[name] != before[name] for name in before)
    with open(f"/proc/{after['app:simulator']}/environ", "rb") as environ:
        assert b"TRADES_PER_SECOND=150" in environ.read().split(b"\0")

