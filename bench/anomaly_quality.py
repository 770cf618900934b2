"""How well the anomaly rules find the simulator's injected anomalies: the full confusion table.

The benchmark of issue 6 ("Measured quality"); alerts/tests/test_detection_quality.py holds
the bounds on one seed, this prints everything for any seed, rate or length. Matching,
tolerances and every count are defined in alerts/quality.py.

Pure run (the default; no services): a seeded MarketSimulator run of the ten default symbols
(24 h of event time from Monday 00:00 UTC unless told otherwise) with anomalies injected,
fed to AnomalyEngine(DEFAULT_RULES) the way the consumer feeds it (batches sorted per symbol,
on_trades, on_quotes, advance). It prints, per seed, the confusion table of price spikes and
volume bursts (TP, FN, alerts, FP, escalations, recall, precision), the other rules' alerts
apart, and the detection delay in event time: from the start of an injected anomaly to the
event time of its first alert (a volume alert's event time is the end of its minute).

    var/venv/bin/python bench/anomaly_quality.py                         # seed 20260302, 30 trades/s, 24 h
    var/venv/bin/python bench/anomaly_quality.py --seed 1,2,3 --rate 100
    var/venv/bin/python bench/anomaly_quality.py --volume-min-ratio 0     # the plain 3-sigma rule

Stored run (`--stored MINUTES`; needs PostgreSQL and Kafka): the real path. The simulator
publishes to a fresh set of topics (a unique KAFKA_TOPIC_PREFIX) in real time: its first hour,
in which it injects nothing, is published at once as history with event times in the past
hour, and then MINUTES more are paced against the wall clock, so that event time is now. The
real AnomalyPipeline on the real ConsumerRunner consumes it in this process (a producer
thread publishes). At the end it scores the alerts the pipeline stored and prints the delay
from the trigger's event time to the alert being stored (detected_at - ts, the quantity
finstream_alert_detection_delay_seconds records), both exactly from the stored alerts and
as the histogram itself gives it (bucket upper bounds). It writes alerts and consumer offsets
into the database it is pointed at: use a scratch stack, e.g. slot 6 of `make test`'s:

    export FINSTREAM_IGNORE_DOTENV=1 FINSTREAM_VAR=$PWD/var/test-6 PG_PORT=56032 REDIS_PORT=56979 \\
           KAFKA_PORT=59692 KAFKA_CONTROLLER_PORT=59693 WEB_PORT=58600
    deploy/stack.sh infra
    export TIMESCALE_URL=postgresql://finstream:finstream@127.0.0.1:56032/finstream \\
           REDIS_URL=redis://127.0.0.1:56979/0 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:59692
    var/venv/bin/python manage.py migrate
    var/venv/bin/python bench/anomaly_quality.py --stored 15 --rate 100
    deploy/stack.sh down     # and `deploy/stack.sh clean` to delete var/test-6
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerts.domain.detectors import DEFAULT_RULES, AnomalyEngine  # noqa: E402
from alerts.domain.rules import RuleConfig  # noqa: E402
from alerts.quality import (  # noqa: E402
    KindScore,
    QualityReport,
    detect_in_batches,
    percentile,
    quality_score,
    quality_table,
)
from market.domain.simulator import DEFAULT_SYMBOLS, WARM_UP_SECONDS, MarketSimulator  # noqa: E402


def main() -> int:
    args = _parse_args()
    if args.stored:
        return stored_run(args)
    rules = _rules(args)
    reports = []
    for seed in args.seeds:
        reports.append(pure_run(args, seed, rules))
    if len(reports) > 1:
        _print_totals(reports)
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", default="20260302", help="a seed, or several separated by commas")
    parser.add_argument("--rate", type=float, default=None,
                        help="trades per second across the ten symbols (default 30; 100 with --stored)")
    parser.add_argument("--hours", type=float, default=24.0, help="hours of event time (default 24)")
    parser.add_argument("--start", default="2026-03-02T00:00:00Z", help="event time of the first event (pure run)")
    parser.add_argument("--anomalies", type=float, default=5.0,
                        help="injected anomalies per symbol per hour (default 5: as often as their spacing allows)")
    parser.add_argument("--quotes-per-trade", type=float, default=None,
                        help="quotes per trade (default 0.5, as the quality test; 1 with --stored, as `simulate`)")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per engine batch (pure run)")
    parser.add_argument("--volume-min-ratio", type=float, default=None,
                        help="override the volume rule's min_ratio (0: the plain k-sigma rule)")
    parser.add_argument("--stored", type=float, default=0, metavar="MINUTES",
                        help="instead: the real pipeline on Kafka and PostgreSQL, MINUTES live after a warm-up hour")
    parser.add_argument("--details", type=int, default=5, help="misses and false alerts listed per kind (default 5)")
    args = parser.parse_args()
    try:
        args.seeds = [int(s) for s in args.seed.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seed {args.seed!r}: give integers separated by commas")
    if args.rate is None:
        args.rate = 100.0 if args.stored else 30.0
    if args.quotes_per_trade is None:
        args.quotes_per_trade = 1.0 if args.stored else 0.5
    try:
        args.start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
    except ValueError:
        parser.error(f"--start {args.start!r} is not an ISO-8601 time, e.g. 2026-03-02T00:00:00Z")
    if args.start.tzinfo is None:
        args.start = args.start.replace(tzinfo=UTC)
    if args.rate <= 0 or args.hours <= 0 or args.stored < 0:
        parser.error("--rate and --hours must be positive, --stored not negative")
    return args


def _rules(args: argparse.Namespace) -> tuple[RuleConfig, ...]:
    if args.volume_min_ratio is None:
        return DEFAULT_RULES
    return tuple(
        dataclasses.replace(c, params=dataclasses.replace(c.params, min_ratio=args.volume_min_ratio))
        if c.type == "volume_anomaly" else c
        for c in DEFAULT_RULES
    )


def _describe_rules(rules) -> str:
    volume = next(c.params for c in rules if c.type == "volume_anomaly")
    spike = next(c.params for c in rules if c.type == "price_spike")
    return (f"price_spike > {spike.threshold_pct:g}% in {spike.window_seconds} s; volume > {volume.k_sigma:g} sigma "
            f"({volume.method}, {volume.baseline_buckets} buckets)"
            + (f" and > {volume.min_ratio:g}x the centre" if volume.min_ratio else " (no min_ratio)"))


def pure_run(args: argparse.Namespace, seed: int, rules) -> QualityReport:
    started = time.monotonic()
    sim = MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=seed, start=args.start, rate=args.rate,
                          anomaly_rate=args.anomalies, quotes_per_trade=args.quotes_per_trade)
    end = args.start + timedelta(hours=args.hours)
    events = takewhile(lambda event: event.ts < end, sim.events())
    detection = detect_in_batches(engine=AnomalyEngine(rules), events=events, batch_size=args.batch_size)
    report = quality_score(ground_truth=sim.ground_truth, alerts=detection.signals, until=detection.until)
    elapsed = time.monotonic() - started
    print(f"## seed {seed}: {args.hours:g} h from {args.start:%Y-%m-%d %H:%M} UTC, 10 symbols, {args.rate:g} trades/s, "
          f"{args.quotes_per_trade:g} quotes/trade, {args.anomalies:g} anomalies/symbol/hour; "
          f"{detection.trades:,} trades + {detection.quotes:,} quotes in {elapsed:.1f} s")
    print(f"rules: {_describe_rules(rules)}")
    print()
    print(quality_table(report, details=args.details))
    print()
    _print_delays(report)
    severities = Counter((s.type, s.severity) for s in detection.signals)
    print("alerts by type and severity: " + ", ".join(f"{t} {sev} {n}" for (t, sev), n in sorted(severities.items())))
    print()
    return report


def _print_delays(report: QualityReport) -> None:
    for score in report.scores.values():
        print(f"event-time delay, anomaly start -> first alert, {score.kind}: p50 {_s(percentile(score.delays, 50))}, "
              f"p99 {_s(percentile(score.delays, 99))}, max {_s(score.delays[-1] if score.delays else float('nan'))} "
              f"over {len(score.delays)} detected")


def _s(value: float) -> str:
    return "-" if value != value else f"{value:.1f} s"


def _print_totals(reports: list[QualityReport]) -> None:
    print(f"## all {len(reports)} seeds")
    for kind in reports[0].scores:
        scores: list[KindScore] = [r.scores[kind] for r in reports]
        anomalies = sum(s.anomalies for s in scores)
        detected = sum(s.detected for s in scores)
        alerts = sum(s.alerts for s in scores)
        matched = sum(s.matched for s in scores)
        print(f"{kind}: {detected}/{anomalies} detected (recall {detected / max(anomalies, 1):.2%}), "
              f"{matched}/{alerts} alerts right (precision {matched / max(alerts, 1):.2%}); worst seed: recall "
              f"{min(s.recall for s in scores):.2%}, precision {min(s.precision for s in scores):.2%}")


# --- the stored path ----------------------------------------------------------------------


def stored_run(args: argparse.Namespace) -> int:
    stamp = f"{datetime.now(UTC):%m%d%H%M%S}-{os.getpid()}"
    # Settings read these at import: a fresh prefix isolates this run's topics and groups.
    os.environ["KAFKA_TOPIC_PREFIX"] = f"bench-quality-{stamp}."
    os.environ["KAFKA_CONSUMER_GROUP_PREFIX"] = f"bench-quality-{stamp}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finstream.settings")
    os.environ["METRICS_PORT"] = "0"
    import logging

    import django

    django.setup()
    logging.getLogger("alerts").setLevel(logging.WARNING)
    from alerts.pipelines import AnomalyPipeline
    from alerts.selectors import alert_rule_configs
    from alerts.services import alert_rules_seed
    from market.domain.pacing import Pacer
    from market.feeds import feed_publish
    from streaming import metrics
    from streaming.kafka import EventPublisher, topics_delete, topics_ensure
    from streaming.runner import ConsumerRunner, RunnerOptions
    from streaming.topics import QUOTES, TOPIC_SPECS, TRADES, topic
    from streaming.wire import epoch_ms

    if args.volume_min_ratio is not None:
        sys.exit("--volume-min-ratio applies to the pure run; the stored run uses the database's rules")
    seed = args.seeds[0]
    alert_rules_seed()
    configs, problems = alert_rule_configs()
    if problems:
        sys.exit("alert rules to fix in the admin first: " + "; ".join(problems))
    if {c.rule: c for c in configs} != {c.rule: c for c in DEFAULT_RULES}:
        print("note: the database's alert rules differ from DEFAULT_RULES; the pipeline runs with the database's")
    print(f"rules: {_describe_rules(configs)}")
    topics_ensure(TOPIC_SPECS)

    now = datetime.now(UTC)
    history = max(WARM_UP_SECONDS.values())  # the simulator injects no volume burst in its first hour
    start = now - timedelta(seconds=history)
    end = now + timedelta(minutes=args.stored)
    sim = MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=seed, start=start, rate=args.rate,
                          anomaly_rate=args.anomalies, quotes_per_trade=args.quotes_per_trade)
    # Events up to now are overdue (published at once, as history); the rest play in real time.
    pacer = Pacer(wall_start=time.monotonic() - history, event_start_ms=epoch_ms(start), speed=1.0)
    stop = threading.Event()
    feed: dict[str, object] = {}

    def produce() -> None:
        publisher = EventPublisher(name="bench-quality")
        try:
            messages = sim.wire_messages(trades_topic=topic(TRADES), quotes_topic=topic(QUOTES), until=end)
            feed["stats"] = feed_publish(messages=messages, publisher=publisher, pacer=pacer,
                                         should_stop=stop.is_set)
        except BaseException as error:  # reported by the main thread
            feed["error"] = error

    producer = threading.Thread(target=produce, name="bench-quality-producer", daemon=True)
    pipeline = AnomalyPipeline()
    stored = []
    original = pipeline.after_commit

    def keep(result) -> None:
        stored.extend(result.alerts)
        original(result)

    pipeline.after_commit = keep  # type: ignore[method-assign]
    runner = ConsumerRunner(pipeline, RunnerOptions(group_id=f"bench-quality-{stamp}"))
    runner.subscribe()
    print(f"seed {seed}: publishing the warm-up hour from {start:%H:%M:%S} UTC at once, then {args.stored:g} minutes "
          f"live at {args.rate:g} trades/s; the real AnomalyPipeline consumes", flush=True)
    producer.start()
    idle_since = None
    next_progress = time.monotonic() + 60
    try:
        while True:
            got = runner.step()
            if "error" in feed:
                raise SystemExit(f"the producer failed: {feed['error']}")
            if time.monotonic() > next_progress:
                next_progress += 60
                print(f"  {datetime.now(UTC):%H:%M:%S} UTC: {len(stored)} alerts stored so far", flush=True)
            if producer.is_alive():
                continue
            # The producer is done: stop once a few empty polls say the consumer caught up.
            idle_since = None if got else (idle_since or time.monotonic())
            if idle_since is not None and time.monotonic() - idle_since > 3:
                break
    except KeyboardInterrupt:
        stop.set()
    finally:
        stop.set()
        runner.close()
        producer.join(timeout=30)
        topics_delete(os.environ["KAFKA_TOPIC_PREFIX"])

    until = min(end, datetime.now(UTC))
    report = quality_score(ground_truth=sim.ground_truth, alerts=stored, until=until)
    print()
    print(quality_table(report, details=args.details))
    print()
    _print_delays(report)
    live = [a for a in stored if a.ts >= now]
    delays = sorted((a.detected_at - a.ts).total_seconds() for a in live)
    by_type = Counter(a.type for a in stored)
    print(f"alerts stored: {len(stored)} ({', '.join(f'{t} {n}' for t, n in sorted(by_type.items()))}); "
          f"{len(stored) - len(live)} of them with event times in the history hour")
    print(f"stored delay, trigger event time -> stored (detected_at - ts), live alerts: "
          f"p50 {_s(percentile(delays, 50))}, "
          f"p99 {_s(percentile(delays, 99))}, max {_s(delays[-1] if delays else float('nan'))} over {len(delays)}")
    for kind in ("price_spike", "volume_anomaly"):
        some = sorted((a.detected_at - a.ts).total_seconds() for a in live if a.type == kind)
        print(f"  {kind}: p50 {_s(percentile(some, 50))}, p99 {_s(percentile(some, 99))} over {len(some)}")
    print("finstream_alert_detection_delay_seconds (this process, every stored alert, history hour included): "
          + _histogram_summary(metrics.DETECTION_DELAY))
    return 0


def _histogram_summary(histogram) -> str:
    """p50 and p99 as the histogram gives them: the upper bound of the bucket the rank falls in."""
    buckets = []
    count = 0.0
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_count"):
                count = sample.value
    if not count:
        return "no observations"

    def rank(p: float) -> str:
        for bound, cumulative in sorted(buckets):
            if cumulative >= p / 100 * count:
                return f"<= {bound:g} s"
        return "?"

    return f"{count:.0f} observations, p50 {rank(50)}, p99 {rank(99)}"


if __name__ == "__main__":
    sys.exit(main())
