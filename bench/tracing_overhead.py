"""What OpenTelemetry tracing costs, off and on, on the two hot paths it touches.

publish   feed_publish (what `simulate`/`replay` run) of the same pre-encoded events to the
          real broker: tracing off, then on (a producer span per 1000 events, a traceparent
          header on every message), in alternating rounds.
consume   the real ConsumerRunner with a pipeline that does nothing, reading those messages:
          off, then on (a span per batch linked to its producers, stage spans).

Spans go to an exporter that drops them, so what is measured is the instrumentation itself,
not a collector. Off means `tracing.tracer()` is None: the only work left on the hot paths is
that test, once per published batch (1,000 events) and once per consumed batch; the last line
times it and gives it as a share of one published batch's cost.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 TIMESCALE_URL=... var/venv/bin/python bench/tracing_overhead.py \\
        [--events 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import timeit
import uuid
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finstream.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: E402

from finstream import tracing  # noqa: E402
from market.domain.simulator import MarketSimulator  # noqa: E402
from market.feeds import feed_publish  # noqa: E402
from streaming.kafka import EventPublisher, topics_delete, topics_ensure  # noqa: E402
from streaming.runner import ConsumerRunner, RunnerOptions  # noqa: E402
from streaming.testing import IdlePipeline  # noqa: E402
from streaming.topics import QUOTES, TOPIC_SPECS, TRADES, topic  # noqa: E402

START = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
SYMBOLS = "AAPL,GOOGL,MSFT,AMZN,META,NVDA,TSLA,JPM,V,JNJ".split(",")


class DroppingExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def set_tracing(on: bool) -> None:
    if on:
        tracing.configure("bench", exporter=DroppingExporter())
    else:
        tracing.shutdown()


RUN_PREFIX = f"bench-tracing-{uuid.uuid4().hex[:8]}-"  # every topic of this run's starts with it


def publish_round(count: int, on: bool) -> tuple[float, int]:
    settings.KAFKA_TOPIC_PREFIX = f"{RUN_PREFIX}{uuid.uuid4().hex[:8]}."
    topics_ensure(TOPIC_SPECS)
    messages = list(islice(MarketSimulator(symbols=SYMBOLS, seed=1, start=START, rate=1000.0).wire_messages(
        trades_topic=topic(TRADES), quotes_topic=topic(QUOTES)), count))
    set_tracing(on)
    started = time.perf_counter()
    stats = feed_publish(messages=iter(messages), publisher=EventPublisher(name="bench"), pacer=None,
                         should_stop=lambda: False)
    elapsed = time.perf_counter() - started
    set_tracing(False)
    return stats.events / elapsed, stats.trades


def consume_round(trades: int, on: bool) -> float:
    """Reads the trades of the latest publish round's topics (the prefix it left in settings)."""
    set_tracing(on)
    runner = ConsumerRunner(IdlePipeline(name="tracing_bench", topics=(TRADES,)), RunnerOptions(batch_size=20_000, batch_wait=0.5,
                                                          group_id=f"bench-{uuid.uuid4().hex[:8]}"))
    runner.subscribe()
    consumed, started = 0, None
    while consumed < trades:
        got = runner.step()
        if got and started is None:
            started = time.perf_counter()  # from the first batch: not the group's join
        consumed += got
    elapsed = time.perf_counter() - started
    runner.close()
    set_tracing(False)
    return consumed / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ratios = {"publish": [], "consume": []}
    try:
        for round_ in range(1, args.rounds + 1):
            rates = {}
            for on in (False, True):
                publish_rate, trades = publish_round(args.events, on)
                rates[("publish", on)] = publish_rate
                rates[("consume", on)] = consume_round(trades, on)
            for path in ratios:
                ratios[path].append(rates[(path, True)] / rates[(path, False)])
                print(f"round {round_} {path:8s} off {rates[(path, False)]:>10,.0f} ev/s   on "
                      f"{rates[(path, True)]:>10,.0f} ev/s   on/off {ratios[path][-1]:.3f}", flush=True)
    finally:  # after the last round: the broker removes a deleted topic's files a minute later
        topics_delete(RUN_PREFIX)
    for path, values in ratios.items():
        print(f"median on/off {path}: {statistics.median(values):.3f}")
    check_ns = timeit.timeit("tracer() is not None", globals={"tracer": tracing.tracer}, number=1_000_000) * 1000
    batch_ns = 1e9 / rates[("publish", False)] * 1000
    print(f"off: the per-batch test costs {check_ns:.0f} ns, {check_ns / batch_ns * 100:.4f} % of a published "
          f"batch of 1,000 events ({batch_ns / 1e6:,.1f} ms, last round)")


if __name__ == "__main__":
    main()
