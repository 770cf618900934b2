"""The anomaly detector on the real consumer runner, against the bare runner doing nothing.

The benchmark of issue 6 ("keeps up with >= 50k trades/s in one process ... memory bounded by
the number of symbols, not by time"). It pre-produces N simulated trades (default 500,000;
ten default symbols at 100 trades per second of event time, the stack's default rate, so
500,000 trades are 83 minutes of event time: every rule's state fills up, and anomalies are
injected after the simulator's first hour) to a fresh `market.trades` under a unique
KAFKA_TOPIC_PREFIX. Then, in the same run and on that same topic, each in a subprocess of its
own (a fresh heap, so that ru_maxrss is the run's own):

bare       the real ConsumerRunner with a pipeline whose prepare/store/after_commit do nothing:
           consume, decode, store the offsets in PostgreSQL, commit to Kafka;
detector   the same runner with the real AnomalyPipeline (`manage.py detect_anomalies`): drop
           duplicate ids, sort each batch per symbol, run the engine with the rules seeded in
           the database (DEFAULT_RULES), store and publish the alerts.

Each reads the topic from the beginning as a consumer group of its own. The rate is "first
message received -> last batch committed" over the N trades. The detector is then run again
over the first N/4 and N/2 trades, and so is the bare runner: their peak RSS (ru_maxrss), the
difference between the two, and the engine's state_size() after runs of different lengths
show what memory grows with. Timings are printed, never asserted.

It writes alerts and consumer offsets (no trades or candles) into the database it is pointed
at: use a scratch stack. Exact commands (slot 6 of `make test`'s private stacks):

    export FINSTREAM_IGNORE_DOTENV=1 FINSTREAM_VAR=$PWD/var/test-6 PG_PORT=56032 REDIS_PORT=56979 \\
           KAFKA_PORT=59692 KAFKA_CONTROLLER_PORT=59693 WEB_PORT=58600
    deploy/stack.sh infra
    export TIMESCALE_URL=postgresql://finstream:finstream@127.0.0.1:56032/finstream \\
           REDIS_URL=redis://127.0.0.1:56979/0 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:59692
    var/venv/bin/python manage.py migrate
    var/venv/bin/python bench/anomaly_throughput.py --trades 500000
    deploy/stack.sh down     # and `deploy/stack.sh clean` to delete var/test-6

Other flags: --event-rate (trades per second of event time), --repeat (bare/detector pairs,
alternating, best of), --lengths (the memory runs, as fractions of N), --batch-size
(CONSUMER_BATCH_SIZE), --seed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.consumer_clock import FirstMessageClock  # noqa: E402 - needs ROOT on the path
START = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # event time of the tape: from 30 minutes before the US open


@dataclass
class Run:
    mode: str
    limit: int
    trades: int
    seconds: float
    maxrss_kb: int
    state_size: int | None = None
    alerts: dict[str, int] | None = None  # raised by the engine, by type
    stored: int | None = None  # of them new in the database (ids are deterministic: a rerun stores none)
    py_blocks: int | None = None  # sys.getallocatedblocks() after gc.collect(): the Python heap
    late_trades: int | None = None
    late_volume_dropped: int | None = None

    @property
    def rate(self) -> float:
        return self.trades / self.seconds if self.seconds > 0 else 0.0


def main() -> int:
    args = _parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finstream.settings")
    os.environ["METRICS_PORT"] = "0"
    if args.child:
        return _child(args)
    stamp = f"{datetime.now(UTC):%m%d%H%M%S}-{os.getpid()}"
    # Settings read these at import: a fresh prefix isolates this run's topics and consumer
    # groups from anything else on the broker. Children inherit them.
    os.environ["KAFKA_TOPIC_PREFIX"] = f"bench-anomalies-{stamp}."
    os.environ["KAFKA_CONSUMER_GROUP_PREFIX"] = f"bench-anomalies-{stamp}"
    import django

    django.setup()
    from alerts.domain.rules import DEFAULT_RULES
    from alerts.selectors import alert_rule_configs
    from alerts.services import alert_rules_seed

    alert_rules_seed()
    configs, problems = alert_rule_configs()
    if problems:
        sys.exit("alert rules to fix in the admin first: " + "; ".join(problems))
    if {c.rule: c for c in configs} != {c.rule: c for c in DEFAULT_RULES}:
        print("note: the database's alert rules differ from DEFAULT_RULES (edited in admin, or seeded by an older "
              "version); the detector runs with the database's:", flush=True)
        for config in configs:
            print(f"  {config.rule}: enabled={config.enabled} {config.params}", flush=True)
    from streaming.kafka import topics_delete

    runs: list[Run] = []
    try:
        produced = _produce(args)
        for i in range(args.repeat):
            # Alternate the order, so that neither mode always gets the warmer broker cache.
            for mode in ("bare", "detector") if i % 2 == 0 else ("detector", "bare"):
                runs.append(_spawn(args, mode, produced, f"{stamp}-{mode}-{i}"))
        for fraction in sorted(args.lengths):
            if fraction < 1:
                for mode in ("bare", "detector"):
                    runs.append(_spawn(args, mode, max(1, int(produced * fraction)),
                                       f"{stamp}-mem-{mode}-{fraction}"))
    finally:
        topics_delete(os.environ["KAFKA_TOPIC_PREFIX"])
    _report(args, produced, runs)
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=500_000, help="trades to pre-produce (default 500000)")
    parser.add_argument("--event-rate", type=float, default=100.0,
                        help="trades per second of event time in the tape (default 100, TRADES_PER_SECOND)")
    parser.add_argument("--repeat", type=int, default=1, help="bare/detector pairs to run, best of (default 1)")
    parser.add_argument("--lengths", default="0.25,0.5",
                        help="memory runs of the detector over these fractions of N (default 0.25,0.5)")
    parser.add_argument("--batch-size", type=int, default=None, help="CONSUMER_BATCH_SIZE (default: the setting)")
    parser.add_argument("--seed", type=int, default=20260302)
    parser.add_argument("--anomalies", type=float, default=5.0,
                        help="injected anomalies per symbol per hour, after the first hour (default 5)")
    parser.add_argument("--child", choices=["bare", "detector"], help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--group", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trades < 1 or args.repeat < 1 or args.event_rate <= 0:
        parser.error("--trades, --repeat and --event-rate must be positive")
    try:
        args.lengths = [float(x) for x in args.lengths.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--lengths {args.lengths!r}: give fractions of N, e.g. 0.25,0.5")
    return args


def _produce(args: argparse.Namespace) -> int:
    """N simulated trades onto the run's own market.trades (keyed by symbol); returns N."""
    from confluent_kafka import Producer

    from market.domain.simulator import DEFAULT_SYMBOLS, MarketSimulator
    from streaming.kafka import producer_config, topics_ensure
    from streaming.schemas import Trade, encode
    from streaming.topics import TOPIC_SPECS, TRADES, topic

    topics_ensure(TOPIC_SPECS)
    name = topic(TRADES)
    started = time.monotonic()
    simulator = MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=args.seed, start=START, rate=args.event_rate,
                                anomaly_rate=args.anomalies)
    producer = Producer(producer_config())
    count = 0
    last = START
    for event in simulator.events():
        if type(event) is not Trade:
            continue
        while True:
            try:
                # No message timestamp: the producer stamps "now". The tape's event times are in
                # the past (March 2026), and with them as timestamps the topic's 7-day retention
                # deletes the pre-produced trades minutes later, under the runs.
                producer.produce(name, encode(event), event.symbol)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        last = event.ts
        if count >= args.trades:
            break
    if producer.flush(60):
        sys.exit("the producer could not deliver every trade in 60 s: is Kafka healthy?")
    spikes = sum(a.kind == "price_spike" for a in simulator.ground_truth)
    print(f"produced {count:,} trades of {len(DEFAULT_SYMBOLS)} symbols to {name} in "
          f"{time.monotonic() - started:.1f} s: "
          f"{(last - START).total_seconds() / 60:.0f} minutes of event time at {args.event_rate:g} trades/s, "
          f"{spikes} price spikes and {len(simulator.ground_truth) - spikes} volume bursts injected", flush=True)
    return count


def _spawn(args: argparse.Namespace, mode: str, limit: int, group: str) -> Run:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--limit", str(limit), "--group",
               f"bench-anomalies-{group}"]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    print(f"--- {mode} over {limit:,} trades", flush=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600 + limit / 1000)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        sys.exit(f"the {mode} run failed with exit code {done.returncode}")
    run = Run(**json.loads(done.stdout.strip().splitlines()[-1]))
    line = (f"{mode}: {run.rate:,.0f} trades/s ({run.trades:,} in {run.seconds:.2f} s), ru_maxrss "
            f"{run.maxrss_kb / 1024:.1f} MB, Python heap {run.py_blocks:,} blocks")
    if run.state_size is not None:
        line += (f", engine state {run.state_size:,} entries, alerts raised {_types(run.alerts)} ({run.stored} new "
                 f"in the database), late trades {run.late_trades:,}, trades dropped by the volume rule as late "
                 f"{run.late_volume_dropped:,}")
    print(line, flush=True)
    return run


def _child(args: argparse.Namespace) -> int:
    import logging

    import django

    django.setup()
    logging.getLogger("alerts").setLevel(logging.WARNING)  # one INFO line per alert otherwise
    from alerts.pipelines import AnomalyPipeline
    from streaming.runner import ConsumerRunner, RunnerOptions
    from streaming.testing import IdlePipeline
    from streaming.topics import QUOTES, TRADES

    pipeline = AnomalyPipeline() if args.child == "detector" else IdlePipeline(
        name="bench_bare", topics=(TRADES, QUOTES))  # what detect_anomalies subscribes to
    options = RunnerOptions(group_id=args.group)
    if args.batch_size:
        options.batch_size = args.batch_size
    runner = ConsumerRunner(pipeline, options)
    clock = FirstMessageClock(runner._consumer)
    runner._consumer = clock
    runner.subscribe()
    done = 0
    alerts: dict[str, int] = {}
    stored = 0
    last_commit = 0.0
    deadline = time.monotonic() + 120 + args.limit / 1000
    if isinstance(pipeline, AnomalyPipeline):
        prepare, after_commit = pipeline.prepare, pipeline.after_commit

        def count_raised(events) -> None:
            already = pipeline._detected_for is not None and pipeline._detected_for[0] is events
            prepare(events)
            if not already:
                for signal in pipeline._detected_for[1]:
                    alerts[signal.type] = alerts.get(signal.type, 0) + 1

        def count_stored(result) -> None:
            nonlocal stored
            stored += len(result.alerts)
            after_commit(result)

        pipeline.prepare = count_raised  # type: ignore[method-assign]
        pipeline.after_commit = count_stored  # type: ignore[method-assign]
    try:
        while done < args.limit:
            got = runner.step()
            if got:
                done += got
                last_commit = time.monotonic()
            if time.monotonic() > deadline:
                raise SystemExit(f"{args.child}: only {done:,} of {args.limit:,} trades before the deadline")
    finally:
        runner.close()
    engine = getattr(pipeline, "_engine", None)
    gc.collect()
    print(json.dumps({
        "mode": args.child,
        "limit": args.limit,
        "trades": done,
        "seconds": last_commit - clock.first_message_at,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "state_size": engine.state_size() if engine is not None else None,
        "alerts": alerts if engine is not None else None,
        "stored": stored if engine is not None else None,
        "py_blocks": sys.getallocatedblocks(),
        "late_trades": engine.counters().late_trades if engine is not None else None,
        "late_volume_dropped": engine.counters().late_volume_dropped if engine is not None else None,
    }))
    return 0


def _report(args: argparse.Namespace, produced: int, runs: list[Run]) -> None:
    import confluent_kafka
    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
    full = [r for r in runs if r.limit == produced]
    bare = max((r for r in full if r.mode == "bare"), key=lambda r: r.rate)
    detector = max((r for r in full if r.mode == "detector"), key=lambda r: r.rate)
    print()
    print(f"# {produced:,} trades of 10 symbols at {args.event_rate:g} trades/s of event time, "
          f"{settings.KAFKA_TOPIC_PARTITIONS} partitions, "
          f"batch size {args.batch_size or settings.CONSUMER_BATCH_SIZE}; "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL {pg}, "
          f"confluent-kafka {confluent_kafka.__version__}; best of {args.repeat}")
    print("| run | trades | seconds | trades/s | ru_maxrss MB | engine state entries | alerts raised |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in sorted(runs, key=lambda r: (r.mode, r.limit)):
        print(f"| {r.mode} | {r.trades:,} | {r.seconds:.2f} | {r.rate:,.0f} | {r.maxrss_kb / 1024:.1f} "
              f"| {'' if r.state_size is None else f'{r.state_size:,}'} | {_types(r.alerts)} |")
    print(f"detector / bare runner: {detector.rate / bare.rate:.2f} of the bare rate "
          f"({detector.rate:,.0f} vs {bare.rate:,.0f} trades/s); the goal is >= 50,000 trades/s: "
          f"{'met' if detector.rate >= 50_000 else 'NOT met'}")
    limits = sorted({r.limit for r in runs})
    if len(limits) > 1:
        # ru_maxrss is the whole process: librdkafka's prefetch queues and the allocator grow
        # with the run too, in the bare runner as much. The detector's own memory is the difference.
        print()
        print("| run length | event time | bare ru_maxrss MB | detector ru_maxrss MB | detector - bare MB "
              "| bare Python blocks | detector Python blocks | engine state entries |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for limit in limits:
            bare_run = min((r for r in runs if r.limit == limit and r.mode == "bare"), key=lambda r: r.maxrss_kb)
            det = min((r for r in runs if r.limit == limit and r.mode == "detector"), key=lambda r: r.maxrss_kb)
            bare_mb = bare_run.maxrss_kb / 1024
            print(f"| {det.trades:,} trades | {det.trades / args.event_rate / 60:.0f} min | {bare_mb:.1f} "
                  f"| {det.maxrss_kb / 1024:.1f} | {det.maxrss_kb / 1024 - bare_mb:+.1f} | {bare_run.py_blocks:,} "
                  f"| {det.py_blocks:,} | {det.state_size:,} |")


def _types(counts: dict[str, int] | None) -> str:
    if counts is None:
        return ""
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "none"


if __name__ == "__main__":
    sys.exit(main())
