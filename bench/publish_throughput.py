"""How fast `simulate --rate max` and `replay --speed max` publish to the real
broker, side by side with the practical limit: raw confluent-kafka producing
pre-encoded messages of the same sizes, in the same run.

Usage (against a running broker, e.g. the one `make up` starts):

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 var/venv/bin/python bench/publish_throughput.py \\
        [--events 600000] [--rows 500000] [--rounds 3]

Every run publishes into topics of its own (a fresh KAFKA_TOPIC_PREFIX) so
nothing reaches the stack's consumers; they are deleted after the last round. Prints events/s per round and the
median ratio ours/raw. "ours" is the rate the command reports, from its first
publish to its final flush, like the raw loop's; the rate over the whole
process (with ~1.5 s of Python, Django and broker start-up) is printed beside
it. Machines here are noisy: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finstream.settings")

import django  # noqa: E402

django.setup()

from confluent_kafka import Producer  # noqa: E402
from django.conf import settings  # noqa: E402

from market.domain.replay import parse_csv  # noqa: E402
from market.domain.simulator import MarketSimulator  # noqa: E402
from streaming.kafka import producer_config, topics_delete, topics_ensure  # noqa: E402
from streaming.schemas import Trade, encode  # noqa: E402
from streaming.topics import TOPIC_SPECS  # noqa: E402

START = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
SYMBOLS = "AAPL,GOOGL,MSFT,AMZN,META,NVDA,TSLA,JPM,V,JNJ"


RUN_PREFIX = f"bench-publish-{uuid.uuid4().hex[:8]}-"  # every topic of this run's starts with it


def fresh_prefix() -> str:
    prefix = f"{RUN_PREFIX}{uuid.uuid4().hex[:8]}."
    settings.KAFKA_TOPIC_PREFIX = prefix
    topics_ensure(TOPIC_SPECS)
    return prefix


def sample_messages(count: int) -> list[tuple[str, bytes, bool]]:
    simulator = MarketSimulator(symbols=SYMBOLS.split(","), seed=1, start=START, rate=1000.0)
    return [(e.symbol, encode(e), type(e) is Trade) for e in simulator.next_batch(count)]


def raw_produce(messages: list[tuple[str, bytes, bool]]) -> float:
    prefix = fresh_prefix()
    producer = Producer(producer_config(**{"delivery.report.only.error": True}))
    trades, quotes = f"{prefix}market.trades", f"{prefix}market.quotes"
    started = time.perf_counter()
    for key, value, is_trade in messages:
        while True:
            try:
                producer.produce(trades if is_trade else quotes, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()
    return len(messages) / (time.perf_counter() - started)


def command_rates(args: list[str]) -> tuple[float, float]:
    """The command's own publishing rate (from its first publish to its final flush, as it reports it)
    and the rate over the whole process, which adds ~1.5 s of Python, Django and broker start-up."""
    prefix = fresh_prefix()
    env = {**os.environ, "KAFKA_TOPIC_PREFIX": prefix, "METRICS_PORT": "0"}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    elapsed = time.perf_counter() - started
    summary = re.search(r"^(?:published|replayed) ([\d,]+) trades and ([\d,]+) quotes .*?"
                        r"\(([\d,]+) (?:events|rows)/s\)", out, re.MULTILINE)
    if summary is None:
        raise RuntimeError(f"no summary line in: {out}")
    events = int(summary[1].replace(",", "")) + int(summary[2].replace(",", ""))
    return float(summary[3].replace(",", "")), events / elapsed


def write_replay_file(path: Path, rows: int) -> None:
    simulator = MarketSimulator(symbols=SYMBOLS.split(","), seed=2, start=START, rate=1000.0)
    written = 0
    with path.open("w") as handle:
        handle.write("timestamp,symbol,price,size,side\n")
        for event in simulator.events():
            if type(event) is Trade:
                handle.write(f"{event.ts.isoformat()},{event.symbol},{event.price},{event.size},{event.side}\n")
                written += 1
                if written == rows:
                    return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # simulate emits about one quote per trade at 1000 trades per event second.
    duration = args.events / 2 / 1000
    messages = sample_messages(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        replay_file = Path(tmp) / "trades.csv"
        write_replay_file(replay_file, args.rows)
        with replay_file.open(newline="") as lines:  # the raw loop's copy: the file's own rows, encoded
            replay_messages = [(trade.symbol, encode(trade), True) for trade in parse_csv(lines)]
        sim_ratios, replay_ratios = [], []
        try:
            for round_ in range(1, args.rounds + 1):
                raw = raw_produce(messages)
                ours, ours_process = command_rates(["simulate", "--rate", "max", "--duration", str(duration),
                                                    "--seed", "1", "--fresh", "--start", START.isoformat()])
                raw_trades = raw_produce(replay_messages)
                replayed, replayed_process = command_rates(["replay", str(replay_file), "--speed", "max"])
                sim_ratios.append(ours / raw)
                replay_ratios.append(replayed / raw_trades)
                print(f"round {round_}: simulate {ours:,.0f} ev/s vs raw {raw:,.0f} ev/s ({ours / raw:.2f}), "
                      f"whole process {ours_process:,.0f}; replay {replayed:,.0f} rows/s vs raw "
                      f"{raw_trades:,.0f} msg/s ({replayed / raw_trades:.2f}), whole process "
                      f"{replayed_process:,.0f}", flush=True)
        finally:  # after the last round: the broker removes a deleted topic's files a minute later
            topics_delete(RUN_PREFIX)
    print(f"median ratio simulate/raw: {statistics.median(sim_ratios):.2f}")
    print(f"median ratio replay/raw:   {statistics.median(replay_ratios):.2f}")


if __name__ == "__main__":
    main()
