"""What `/ready` checks: each dependency answers within a deadline.

Every check returns (ok, detail). They run concurrently in threads so that one
dead service costs one timeout, not the sum of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connections
from django.db.migrations.executor import MigrationExecutor

from streaming import heartbeats
from streaming.kafka import kafka_cluster_reachable
from streaming.redis import redis_client

CHECK_TIMEOUT_SECONDS = 3.0

log = logging.getLogger(__name__)


def check_postgres() -> tuple[bool, str]:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
    return True, "ok"


def check_migrations() -> tuple[bool, str]:
    connection = connections["default"]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        return False, f"{len(plan)} migrations not applied: run `manage.py migrate`"
    return True, "all applied"


def check_storage_mode() -> tuple[bool, str]:
    from market.storage import storage_mode

    mode = storage_mode()
    return (mode is not None), (mode or "time-series tables missing: run `manage.py migrate`")


def check_redis() -> tuple[bool, str]:
    redis_client().ping()
    return True, "ok"


def check_kafka() -> tuple[bool, str]:
    brokers = kafka_cluster_reachable(timeout=CHECK_TIMEOUT_SECONDS - 0.5)
    return True, f"{brokers} broker(s)"


def check_consumers() -> tuple[bool, str]:
    expected = settings.READY_CONSUMERS
    ages = heartbeats.heartbeat_ages(expected)
    missing = [name for name in expected if ages.get(name) is None]
    if missing:
        return False, f"no recent heartbeat from {', '.join(missing)}"
    return True, ", ".join(f"{name} {ages[name]:.1f}s ago" for name in expected) or "none expected"


CHECKS: dict[str, Callable[[], tuple[bool, str]]] = {
    "postgres": check_postgres,
    "migrations": check_migrations,
    "storage": check_storage_mode,
    "redis": check_redis,
    "kafka": check_kafka,
    "consumers": check_consumers,
}


def _timed(name: str, check: Callable[[], tuple[bool, str]]) -> dict[str, object]:
    started = time.perf_counter()
    try:
        ok, detail = check()
    except Exception as error:  # noqa: BLE001 - a probe reports every failure as "not ready", it never raises
        # The error's text names hosts, ports and users: it goes to the log, not to whoever asks /ready.
        _log_failure(name, error)
        ok, detail = False, f"failed: {type(error).__name__} (the web process's log has the error)"
    return {"ok": ok, "detail": detail, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


# A probe asks every few seconds: an outage is logged once a minute per check, not at every probe.
_LOG_EVERY_SECONDS = 60.0
_logged_at: dict[str, float] = {}


def _log_failure(name: str, error: Exception) -> None:
    now = time.monotonic()
    if now - _logged_at.get(name, -_LOG_EVERY_SECONDS) >= _LOG_EVERY_SECONDS:
        _logged_at[name] = now
        log.warning("/ready: the %s check failed: %s: %s", name, type(error).__name__, error)


def readiness_report() -> dict[str, object]:
    pool = ThreadPoolExecutor(max_workers=len(CHECKS))
    futures = {name: pool.submit(_run_with_connection_cleanup, name, check) for name, check in CHECKS.items()}
    deadline = time.monotonic() + CHECK_TIMEOUT_SECONDS
    results = {}
    for name, future in futures.items():
        try:
            results[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            results[name] = {"ok": False, "detail": f"no answer in {CHECK_TIMEOUT_SECONDS:.0f} s", "latency_ms": None}
    # A hung check must not hold the response: its thread finishes on its own.
    pool.shutdown(wait=False, cancel_futures=True)
    return {"ready": all(r["ok"] for r in results.values()), "checks": results}


def _run_with_connection_cleanup(name: str, check: Callable[[], tuple[bool, str]]) -> dict[str, object]:
    try:
        return _timed(name, check)
    finally:
        connections.close_all()
