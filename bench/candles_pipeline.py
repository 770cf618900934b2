"""End to end: Kafka -> trades + 1m/5m/15m/1h/4h/1d candles committed in PostgreSQL.

The benchmark of issue 5 ("Speed"). It generates N simulated trades (trades
only, ten symbols, `simulate --rate max` style event times: 1,000 trades per
event second), spreads the symbols over 2 partitions so that both hold about
half, and then, on those same trades and in the same run, each time from an
empty market_trade / market_candle:

ours       the real ConsumerRunner + TradesPipeline in this process, step() until
           all N are committed (the loop `build_candles` runs);
procs1/2   `manage.py build_candles` as 1, then 2 subprocesses of one consumer group
           on the 2 partitions: the scaling figure;
naive      bench/naive_consumer.py: one message, one transaction (INSERT the trade,
           six candle upserts), offsets committed per message;
quix       bench/quix_candles.py: Quix Streams, six tumbling windows (OHLCV, count,
           VWAP) and the trades written to PostgreSQL, in a virtualenv of its own
           (var/bench-quix-venv, created here on first use) because Quix Streams
           pins confluent-kafka below 2.13.

Every topic is fresh, under a unique KAFKA_TOPIC_PREFIX, and deleted at the end.
After every run the candle totals (sum of `trades` per interval) must equal the
trades consumed, for every interval, and market_trade must hold that many rows;
a mismatch prints FAILED and the exit status is 1. Timings are printed, never
asserted.

How each rate is timed:
- ours, naive, quix: from the consumer's first message to its last commit in
  PostgreSQL (the consumers report these moments themselves);
- procs1/2: the trades are produced in one Kafka transaction that is committed
  only once every process has its partitions (consumers read committed data
  only), so the figure runs from "all data visible" to the last commit (polled
  every 20 ms from the offsets PostgreSQL holds): no start-up or rebalance in it.
The in-process run also prints the CPU that it and its PostgreSQL backend used
per trade, which a busy machine does not distort as much as wall time.

`--soak SECONDS` is a separate mode: `manage.py simulate --rate R` (10,000
trades/s by default) publishes while `manage.py build_candles` consumes; the
consumer's RSS is sampled every 10 s, with its committed trades and lag.

The benchmark EMPTIES market_trade and market_candle: point it at a scratch
stack, never at data you want. Exact commands (the ports of `make test`'s slot 7):

    export FINSTREAM_IGNORE_DOTENV=1 FINSTREAM_VAR=$PWD/var/test-7 PG_PORT=56132 REDIS_PORT=57079 \\
           KAFKA_PORT=59792 KAFKA_CONTROLLER_PORT=59793 WEB_PORT=58700
    deploy/stack.sh infra
    export TIMESCALE_URL=postgresql://finstream:finstream@127.0.0.1:56132/finstream \\
           REDIS_URL=redis://127.0.0.1:57079/0 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:59792 READY_CONSUMERS=
    var/venv/bin/python manage.py migrate
    var/venv/bin/python bench/candles_pipeline.py --trades 500000 --truncate
    var/venv/bin/python bench/candles_pipeline.py --soak 600 --truncate
    deploy/stack.sh down     # then `deploy/stack.sh clean` deletes var/test-7

Other flags: --runs ours,procs1,procs2,naive,quix (a subset, in that order),
--repeat K (ours, procs1 and procs2 run K times, 3 by default; the table shows
the median), --batch-size (CONSUMER_BATCH_SIZE for ours), --naive-limit (the
naive consumer is slow: it runs on the first M of the same messages, 50,000 by
default), --profile FILE (cProfile the in-process run; `python -m pstats FILE`).
Ratios are against the median of one `build_candles` process.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.consumer_clock import FirstMessageClock  # noqa: E402 - needs ROOT on the path
from bench.procstat import cpu_seconds, rss_mib  # noqa: E402

VAR = ROOT / "var" / "bench"
QUIX_VENV = ROOT / "var" / "bench-quix-venv"
QUIX_REQUIREMENTS = ["quixstreams==3.28.1", "psycopg[binary]==3.3.9"]
INTERVAL_NAMES = ("1m", "5m", "15m", "1h", "4h", "1d")
RUNS = ("ours", "procs1", "procs2", "naive", "quix")
PARTITIONS = 2


@dataclass
class Result:
    name: str
    trades: int  # the trades the rate is counted over
    seconds: float
    definition: str
    stored: int = 0  # the trades the run stored in all (the cross-check's expectation)
    notes: list[str] = field(default_factory=list)
    ok: bool = True

    @property
    def rate(self) -> float:
        return self.trades / self.seconds if self.seconds > 0 else 0.0


def main() -> int:
    args = _parse_args()
    stamp = f"{datetime.now(UTC):%m%d%H%M%S}-{os.getpid()}"
    # Settings read these at import: a fresh prefix isolates this run's topics
    # and consumer groups from anything else on the broker.
    os.environ["KAFKA_TOPIC_PREFIX"] = f"bench-{stamp}."
    os.environ["METRICS_PORT"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finstream.settings")
    import django

    django.setup()
    VAR.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, stamp)
    bench.check_database_is_scratch()
    try:
        if args.soak:
            return bench.soak(seconds=args.soak, rate=args.soak_rate)
        return bench.throughput()
    finally:
        bench.delete_topics()


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=500_000, help="trades to pre-produce (default 500000)")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {','.join(RUNS)}")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="CONSUMER_BATCH_SIZE for ours (default: the setting)")
    parser.add_argument("--naive-limit", type=int, default=50_000,
                        help="messages the naive consumer processes (default 50000; 0 = all)")
    parser.add_argument("--quix-commit-interval", type=float, default=5.0,
                        help="Quix Streams checkpoint interval in seconds (its default: 5)")
    parser.add_argument("--profile", metavar="FILE", default=None,
                        help="cProfile the in-process run and write the stats to FILE")
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours/procs1/procs2 (median reported)")
    parser.add_argument("--seed", type=int, default=20260302)
    parser.add_argument("--truncate", action="store_true",
                        help="allow emptying market_trade/market_candle when they hold rows")
    parser.add_argument("--soak", type=float, default=0, metavar="SECONDS",
                        help="instead: simulate + build_candles for SECONDS, sampling the consumer's RSS")
    parser.add_argument("--soak-rate", type=int, default=10_000, help="trades/s for --soak (default 10000)")
    args = parser.parse_args()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(runs) - set(RUNS)
    if unknown:
        parser.error(f"--runs: unknown {sorted(unknown)}; use a subset of {','.join(RUNS)}")
    args.runs = [r for r in RUNS if r in runs]
    if args.trades < 1:
        parser.error("--trades must be positive")
    return args


class Bench:
    def __init__(self, args: argparse.Namespace, stamp: str) -> None:
        from django.conf import settings

        self.args = args
        self.stamp = stamp
        self.settings = settings
        self.prefix = settings.KAFKA_TOPIC_PREFIX
        self.quix_group = f"bench-{stamp}-quix"
        self.batch_size = args.batch_size or settings.CONSUMER_BATCH_SIZE
        self.failed = False

    # --- the data -----------------------------------------------------------------
    def check_database_is_scratch(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT EXISTS (SELECT 1 FROM market_trade)")
            has_rows = cursor.fetchone()[0]
        if has_rows and not self.args.truncate:
            database = self.settings.DATABASES["default"]
            sys.exit(f"market_trade at {database['HOST']}:{database['PORT']}/{database['NAME']} holds trades, and "
                     "this benchmark empties market_trade and market_candle between runs: point TIMESCALE_URL at a "
                     "scratch stack (see the docstring), or pass --truncate if that data may go.")

    def create_topics(self, prefix: str, *bases: str) -> None:
        from streaming.kafka import topics_ensure
        from streaming.topics import TOPIC_SPECS, TopicSpec

        specs = {spec.base_name: spec for spec in TOPIC_SPECS}
        # TopicSpec names come from the settings' prefix; another prefix (the
        # gated copies for the subprocesses) is added in front of it.
        extra = prefix.removeprefix(self.prefix)
        # No time retention: the simulated trades carry event times from the
        # past, and the broker would delete them while they are read.
        topics_ensure([TopicSpec(extra + base, PARTITIONS, {**specs[base].config, "retention.ms": "-1"})
                       for base in bases])

    def delete_topics(self) -> None:
        """This run's topics, and those Quix made for its consumer group: `<type>__<group>--...`."""
        from streaming.kafka import topics_delete

        topics_delete(self.prefix, f"changelog__{self.quix_group}--", f"repartition__{self.quix_group}--")

    def generate(self) -> None:
        """The N trades, encoded, and the partition of each symbol."""
        from market.domain.simulator import DEFAULT_SYMBOLS, MarketSimulator
        from streaming.schemas import Trade, encode

        started = time.monotonic()
        # 'max' in `simulate` means a nominal 1,000 trades per event second.
        simulator = MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=self.args.seed,
                                    start=datetime(2026, 3, 2, 14, 0, tzinfo=UTC), rate=1000.0)
        self.encoded: list[tuple[str, bytes, int]] = []
        per_symbol: dict[str, int] = {}
        days = set()
        for event in simulator.events():
            if type(event) is not Trade:
                continue
            self.encoded.append((event.symbol, encode(event), int(event.ts.timestamp() * 1000)))
            per_symbol[event.symbol] = per_symbol.get(event.symbol, 0) + 1
            days.add(event.ts.date())
            if len(self.encoded) >= self.args.trades:
                break
        self.days = sorted(days)
        # Symbols go to partitions so that both hold about as many trades (the
        # default murmur2 split of ten symbols can be lopsided, which would
        # measure the split, not the scaling).
        self.loads = [0] * PARTITIONS
        self.partition_of: dict[str, int] = {}
        for symbol, count in sorted(per_symbol.items(), key=lambda item: -item[1]):
            target = self.loads.index(min(self.loads))
            self.partition_of[symbol] = target
            self.loads[target] += count
        print(f"generated {len(self.encoded):,} trades of {len(per_symbol)} symbols in "
              f"{time.monotonic() - started:.1f} s; partitions: "
              f"{', '.join(f'{p}: {n:,}' for p, n in enumerate(self.loads))}", flush=True)

    def publish(self, prefix: str, *, gated: bool = False):
        """The trades onto `prefix`market.trades (fresh, 2 partitions). With
        gated=True they go out in one Kafka transaction left open: the caller
        commits it (the returned producer) when its consumers are ready."""
        from confluent_kafka import Producer

        from streaming.kafka import producer_config
        from streaming.topics import CANDLES, TRADES

        self.create_topics(prefix, TRADES, CANDLES)
        name = prefix + TRADES
        started = time.monotonic()
        config = producer_config()
        if gated:
            config.update({"transactional.id": f"bench-{self.stamp}-{prefix}", "transaction.timeout.ms": 600_000})
        producer = Producer(config)
        if gated:
            producer.init_transactions(30)
            producer.begin_transaction()
        partition_of = self.partition_of
        for symbol, value, timestamp_ms in self.encoded:
            while True:
                try:
                    producer.produce(name, value, symbol, partition=partition_of[symbol], timestamp=timestamp_ms)
                    break
                except BufferError:
                    producer.poll(0.05)
        if producer.flush(120):
            sys.exit("the producer could not deliver every trade in 120 s: is Kafka healthy?")
        print(f"produced {len(self.encoded):,} trades to {name} in {time.monotonic() - started:.1f} s"
              + (" (transaction left open)" if gated else ""), flush=True)
        return name, producer

    def reset_database(self, days) -> None:
        """An empty market_trade / market_candle (partitions of `days` kept or created)."""
        from django.db import connection

        from market.storage import CANDLES, TRADES, partitions_ensure

        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE market_trade, market_candle")
            cursor.execute("DROP TABLE IF EXISTS bench_quix_candle")
        partitions_ensure(table=TRADES, days=set(days))
        partitions_ensure(table=CANDLES, days=set(days))

    def check_totals(self, result: Result, *, candle_table: str = "market_candle") -> None:
        """Every interval's candles count each consumed trade exactly once."""
        from django.db import connection

        expected = result.stored or result.trades
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM market_trade")
            stored = cursor.fetchone()[0]
            cursor.execute(f"SELECT interval, sum(trades), count(*) FROM {candle_table} GROUP BY interval")
            by_interval = {interval: (int(total), rows) for interval, total, rows in cursor.fetchall()}
        problems = []
        if stored != expected:
            problems.append(f"market_trade holds {stored:,}")
        for interval in INTERVAL_NAMES:
            total, _rows = by_interval.get(interval, (0, 0))
            if total != expected:
                problems.append(f"{interval} candles count {total:,}")
        candles = sum(rows for _total, rows in by_interval.values())
        if problems:
            result.ok = False
            self.failed = True
            result.notes.append(f"FAILED cross-check, expected {expected:,}: " + "; ".join(problems))
        else:
            result.notes.append(f"check ok: {stored:,} trades stored; the candles of every interval total "
                                f"{expected:,} ({candles:,} candle rows in {candle_table})")

    # --- the runs -------------------------------------------------------------------
    def throughput(self) -> int:
        n = self.args.trades
        self.generate()
        topic_name, _producer = self.publish(self.prefix)
        results: dict[str, list[Result]] = {}
        for run in self.args.runs:
            # Ours is quick: repeat it and report the median, since the
            # machine is shared and one run can land on a busy moment.
            for attempt in range(self.args.repeat if run in ("ours", "procs1", "procs2") else 1):
                self.reset_database(self.days)
                print(f"--- {run} #{attempt + 1} (load average {os.getloadavg()[0]:.1f})", flush=True)
                if run == "ours":
                    result = self.run_ours_in_process(n, attempt)
                elif run in ("procs1", "procs2"):
                    result = self.run_ours_processes(n, processes=int(run[-1]), attempt=attempt)
                elif run == "naive":
                    result = self.run_naive(topic_name, min(n, self.args.naive_limit or n))
                else:
                    result = self.run_quix(topic_name, n)
                if result is None:
                    break
                self.check_totals(result, candle_table="bench_quix_candle" if run == "quix" else "market_candle")
                results.setdefault(run, []).append(result)
                print(f"{result.name}: {result.rate:,.0f} trades/s ({result.trades:,} in {result.seconds:.2f} s, "
                      f"{result.definition})", flush=True)
                for note in result.notes:
                    print(f"    {note}", flush=True)
        self.report(results, n)
        return 1 if self.failed else 0

    def run_ours_in_process(self, n: int, attempt: int) -> Result:
        from market.pipelines import TradesPipeline
        from streaming.runner import ConsumerRunner, RunnerOptions

        group = f"bench-{self.stamp}-ours-{attempt}"
        runner = ConsumerRunner(TradesPipeline(), RunnerOptions(group_id=group, batch_size=self.batch_size))
        # The first message the consumer returns marks "first message"; the
        # consumer object is wrapped only to see that moment.
        clock = FirstMessageClock(runner._consumer)
        runner._consumer = clock
        runner.subscribe()
        gc.freeze()  # as run_pipeline() does before its loop
        profile = cProfile.Profile() if self.args.profile else None
        done = 0
        commits: list[tuple[float, int]] = []
        deadline = time.monotonic() + 60 + n / 1000
        backend = _backend_pid()
        cpu_before, backend_before = time.process_time(), cpu_seconds(backend)
        if profile:
            profile.enable()
        try:
            while done < n:
                got = runner.step()
                if got:
                    done += got
                    commits.append((time.monotonic(), done))
                if time.monotonic() > deadline:
                    raise SystemExit(f"ours: only {done:,} of {n:,} trades after the deadline")
        finally:
            if profile:
                profile.disable()
            runner.close()
        cpu, backend_cpu = time.process_time() - cpu_before, cpu_seconds(backend) - backend_before
        result = Result("ours, 1 process (in-process runner)", done, commits[-1][0] - clock.first_message_at,
                        "first message -> last commit")
        if len(commits) > 1:
            rate = (done - commits[0][1]) / (commits[-1][0] - commits[0][0])
            result.notes.append(f"batch size {self.batch_size}, {len(commits)} batches; first commit -> last "
                                f"commit: {rate:,.0f} trades/s")
        result.notes.append(f"CPU: this process {cpu:.1f} s ({cpu / done * 1e6:.1f} us/trade, librdkafka's threads "
                            f"included), its PostgreSQL backend {backend_cpu:.1f} s "
                            f"({backend_cpu / done * 1e6:.1f} us/trade)")
        if profile:
            profile.dump_stats(self.args.profile)
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
            result.notes.append(f"profile in {self.args.profile}")
        return result

    def _subprocess_env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"KAFKA_TOPIC_PREFIX": self.prefix, "METRICS_PORT": "0", "READY_CONSUMERS": "",
                    "CONSUMER_BATCH_SIZE": str(self.batch_size), "PYTHONUNBUFFERED": "1"})
        env.update(extra)
        return env

    def run_ours_processes(self, n: int, *, processes: int, attempt: int) -> Result:
        from streaming.models import ConsumerOffset

        # A copy of the same trades under a prefix of its own, in an open
        # transaction: the processes start, join and get their partitions with
        # nothing to read, and the commit releases all N at once.
        prefix = f"{self.prefix}procs{processes}-{attempt}."
        topic_name, producer = self.publish(prefix, gated=True)
        group_prefix = f"bench-{self.stamp}-procs{processes}-{attempt}"
        group = f"{group_prefix}.build_candles"
        env = self._subprocess_env(KAFKA_TOPIC_PREFIX=prefix, KAFKA_CONSUMER_GROUP_PREFIX=group_prefix)
        logs = [VAR / f"build_candles-{self.stamp}-{processes}-{attempt}-{i}.log" for i in range(processes)]
        procs = [subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "build_candles"], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=log.open("w")) for log in logs]
        try:
            _wait_for_assignments(logs, procs, partitions=PARTITIONS, timeout=120)
            producer.commit_transaction(60)
            opened = time.monotonic()
            cpu_before = [cpu_seconds(proc.pid) for proc in procs]
            commits = _poll_committed(ConsumerOffset._meta.db_table, group, n, procs, timeout=120 + n / 1000)
            cpu = sum(cpu_seconds(proc.pid) for proc in procs) - sum(cpu_before)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(60) for proc in procs]
        done = commits[-1][1]
        plural = "es" if processes > 1 else ""
        result = Result(f"ours, {processes} process{plural} (manage.py build_candles)", done,
                        commits[-1][0] - opened, "data visible -> last commit", stored=done)
        if len(commits) > 1:
            rate = (done - commits[0][1]) / (commits[-1][0] - commits[0][0])
            result.notes.append(f"first commit -> last commit: {rate:,.0f} trades/s")
        result.notes.append(f"CPU of the build_candles process{plural} while the data lasted: {cpu:.1f} s "
                            f"({cpu / done * 1e6:.1f} us/trade, PostgreSQL not included)")
        result.notes.append(f"topic {topic_name}; exit codes {codes}; logs "
                            f"{', '.join(str(log.relative_to(ROOT)) for log in logs)}")
        for i, log in enumerate(logs):
            result.notes.append(f"process {i} partitions: {_assignments(log)[-1] if _assignments(log) else 'none'}")
        return result

    def run_naive(self, topic_name: str, limit: int) -> Result:
        group = f"bench-{self.stamp}-naive"
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "naive_consumer.py"), "--topic", topic_name, "--group", group,
             "--limit", str(limit)],
            env=self._subprocess_env(), cwd=ROOT, capture_output=True, text=True, timeout=7200, check=False,
        )
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            raise SystemExit(f"naive consumer failed with exit code {out.returncode}")
        report = json.loads(out.stdout.strip().splitlines()[-1])
        result = Result("naive: per message INSERT + 6 upserts, 1 transaction", report["messages"],
                        report["last_commit"] - report["first_message"], "first message -> last commit")
        if limit < self.args.trades:
            result.notes.append(f"the first {limit:,} of the {self.args.trades:,} messages (--naive-limit)")
        return result

    def run_quix(self, topic_name: str, n: int) -> Result | None:
        python = _quix_python()
        if python is None:
            return None
        group = self.quix_group
        state_dir = VAR / f"quix-state-{self.stamp}"
        log = VAR / f"quix-{self.stamp}.log"
        database = self.settings.DATABASES["default"]
        url = (f"postgresql://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:{database['PORT']}/"
               f"{database['NAME']}")
        proc = subprocess.Popen(
            [str(python), str(ROOT / "bench" / "quix_candles.py"), "--broker", self.settings.KAFKA_BOOTSTRAP_SERVERS,
             "--topic", topic_name, "--group", group, "--database", url, "--state-dir", str(state_dir),
             "--commit-interval", str(self.args.quix_commit_interval)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
        )
        last: dict = {}
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # ends when the process does
                if line.startswith("{"):
                    last = json.loads(line)
                    if last["trades"] >= n:
                        break
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            shutil.rmtree(state_dir, ignore_errors=True)
        if not last:
            raise SystemExit(f"Quix Streams stored nothing: see {log}")
        result = Result("quix: Quix Streams, 6 tumbling windows", last["trades"],
                        last["t"] - last["first_message"], "first message -> last commit")
        result.notes.append(f"checkpoint every {self.args.quix_commit_interval:g} s, changelog topics on "
                            f"(Quix's defaults); log {log.relative_to(ROOT)}")
        return result

    def report(self, results: dict[str, list[Result]], n: int) -> None:
        import confluent_kafka
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('server_version'), current_setting('fsync'), "
                           "current_setting('synchronous_commit')")
            pg, fsync, sync_commit = cursor.fetchone()
        print()
        print(f"# {n:,} trades, {PARTITIONS} partitions, batch size {self.batch_size}; {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}; Python {platform.python_version()}, PostgreSQL "
              f"{pg.split()[0]} (fsync={fsync}, synchronous_commit={sync_commit}), "
              f"confluent-kafka {confluent_kafka.__version__}")
        medians = {run: sorted(r.rate for r in runs)[len(runs) // 2] for run, runs in results.items()}
        base = medians.get("procs1") or medians.get("ours")
        print("| run | trades | trades/s (median) | runs: trades/s | ours is x times faster |")
        print("|---|---:|---:|---|---:|")
        for run, runs in results.items():
            ratio = f"{base / medians[run]:,.1f}" if base and run in ("naive", "quix") else ""
            every = ", ".join(f"{r.rate:,.0f}" for r in runs)
            print(f"| {runs[0].name} | {runs[0].trades:,} | {medians[run]:,.0f} | {every} | {ratio} |"
                  + ("" if all(r.ok for r in runs) else " FAILED"))
        if base:
            print(f"(ratios against the median of ours, {'1 build_candles process' if 'procs1' in medians else 'in-process'})")
        if "procs1" in medians and "procs2" in medians:
            print(f"scaling, build_candles 2 processes / 1 process (medians): {medians['procs2'] / medians['procs1']:.2f}x")

    # --- soak -----------------------------------------------------------------------
    def soak(self, *, seconds: float, rate: int) -> int:
        from confluent_kafka import Consumer, TopicPartition
        from django.db import connection

        from streaming.kafka import consumer_config
        from streaming.models import ConsumerOffset
        from streaming.topics import CANDLES, QUOTES, TRADES

        self.create_topics(self.prefix, TRADES, QUOTES, CANDLES)
        today = datetime.now(UTC).date()
        self.reset_database([today, today + timedelta(days=1)])
        group_prefix = f"bench-{self.stamp}-soak"
        group = f"{group_prefix}.build_candles"
        env = self._subprocess_env(KAFKA_CONSUMER_GROUP_PREFIX=group_prefix)
        consumer_log = VAR / f"soak-build_candles-{self.stamp}.log"
        simulate_log = VAR / f"soak-simulate-{self.stamp}.log"
        consumer = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "build_candles"], env=env, cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=consumer_log.open("w"))
        simulator = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "simulate", "--rate", str(rate), "--seed", str(self.args.seed),
             "--fresh"],
            env=env, cwd=ROOT, stdout=simulate_log.open("w"), stderr=subprocess.STDOUT)
        watermarks = Consumer(consumer_config(f"{group_prefix}.watermarks"))
        trades_topic = self.prefix + TRADES
        table = ConsumerOffset._meta.db_table
        samples: list[tuple[float, float, int, int]] = []  # (elapsed, RSS MB, committed, produced)
        started = time.monotonic()
        print(f"soak: manage.py simulate --rate {rate} -> manage.py build_candles (pid {consumer.pid}) for "
              f"{seconds:.0f} s; a sample every 10 s", flush=True)
        print("elapsed_s  rss_mb  committed_trades  trades_per_s  lag_trades", flush=True)
        try:
            while True:
                elapsed = time.monotonic() - started
                for proc, name in ((consumer, "build_candles"), (simulator, "simulate")):
                    if proc.poll() is not None:
                        raise SystemExit(f"{name} exited with {proc.returncode}: see {VAR.relative_to(ROOT)}/")
                with connection.cursor() as cursor:
                    cursor.execute(f'SELECT coalesce(sum(next_offset), 0) FROM {table} WHERE "group" = %s', [group])
                    committed = int(cursor.fetchone()[0])
                produced = sum(watermarks.get_watermark_offsets(TopicPartition(trades_topic, p), timeout=5)[1]
                               for p in range(PARTITIONS))
                rss = rss_mib(consumer.pid)
                previous = samples[-1] if samples else (0.0, 0.0, 0, 0)
                per_second = (committed - previous[2]) / max(elapsed - previous[0], 1e-9)
                samples.append((elapsed, rss, committed, produced))
                print(f"{elapsed:9.0f}  {rss:6.1f}  {committed:16,}  {per_second:12,.0f}  {produced - committed:10,}",
                      flush=True)
                if elapsed >= seconds:
                    break
                time.sleep(max(0.0, started + len(samples) * 10.0 - time.monotonic()))
        finally:
            simulator.send_signal(signal.SIGTERM)
            simulator.wait(60)
            consumer.send_signal(signal.SIGTERM)
            code = consumer.wait(60)
            watermarks.close()
        # Flat: the least-squares slope of RSS after a minute of warm-up, and
        # over the second half of the run alone.
        def slope(points: list[tuple[float, float]]) -> float:
            mean_t = sum(t for t, _ in points) / len(points)
            mean_r = sum(r for _, r in points) / len(points)
            variance = sum((t - mean_t) ** 2 for t, _ in points) or 1.0
            return sum((t - mean_t) * (r - mean_r) for t, r in points) / variance * 60

        rss = [(t, r) for t, r, _c, _p in samples]
        warm = [(t, r) for t, r in rss if t >= 60] or rss
        half = [(t, r) for t, r in rss if t >= rss[-1][0] / 2] or rss
        elapsed, _rss, total, produced = samples[-1]
        print()
        print(f"soak {elapsed:.0f} s at --rate {rate:,}: {total:,} trades committed ({total / elapsed:,.0f}/s), "
              f"lag at the end {produced - total:,}; build_candles RSS {rss[0][1]:.1f} MB at start, "
              f"{warm[0][1]:.1f} MB after 1 min, {half[0][1]:.1f} MB at half time, {rss[-1][1]:.1f} MB at the end, "
              f"max {max(r for _, r in rss):.1f} MB; slope {slope(warm):+.2f} MB/min after 1 min, "
              f"{slope(half):+.2f} MB/min over the second half; exit code {code}; "
              f"load average {os.getloadavg()[0]:.1f}")
        return 0 if code == 0 else 1


def _backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _assignments(log: Path) -> list[str]:
    """What each 'assigned' line of a build_candles log says, oldest first."""
    return [line.split(" assigned ", 1)[1].strip() for line in log.read_text().splitlines() if " assigned " in line]


def _wait_for_assignments(logs: list[Path], procs, *, partitions: int, timeout: float) -> None:
    """Until every process's latest assignment is non-empty and together they hold every partition."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = [(_assignments(log) or ["nothing"])[-1] for log in logs]
        held = [part for text in latest if text != "nothing" for part in text.split(", ")]
        if "nothing" not in latest and len(held) == partitions:
            return
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"build_candles exited with {proc.returncode} before its assignment: see {logs}")
        time.sleep(0.1)
    raise SystemExit(f"build_candles processes not assigned {partitions} partitions in {timeout:.0f} s: see {logs}")


def _poll_committed(table: str, group: str, n: int, procs, *, timeout: float,
                    every: float = 0.02) -> list[tuple[float, int]]:
    """(time, trades committed) at every change of the group's offsets in PostgreSQL, until n."""
    from django.db import connection

    commits: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while True:
            cursor.execute(f'SELECT coalesce(sum(next_offset), 0) FROM {table} WHERE "group" = %s', [group])
            committed = int(cursor.fetchone()[0])
            now = time.monotonic()
            if committed and (not commits or committed != commits[-1][1]):
                commits.append((now, committed))
            if committed >= n:
                return commits
            for proc in procs:
                if proc.poll() is not None:
                    raise SystemExit(f"build_candles exited with {proc.returncode} after {committed:,} trades")
            if now > deadline:
                raise SystemExit(f"only {committed:,} of {n:,} trades committed after {timeout:.0f} s")
            time.sleep(every)


def _quix_python() -> Path | None:
    """The Python of the Quix Streams virtualenv, created on first use; None (and why) if it cannot be."""
    python = QUIX_VENV / "bin" / "python"
    probe = [str(python), "-c", "import quixstreams, psycopg"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    print(f"creating {QUIX_VENV.relative_to(ROOT)} with {' '.join(QUIX_REQUIREMENTS)} ...", flush=True)
    for step in (["python3", "-m", "venv", str(QUIX_VENV)],
                 [str(QUIX_VENV / "bin" / "pip"), "install", "-q", *QUIX_REQUIREMENTS]):
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"quix: skipped, `{' '.join(step)}` failed:\n{done.stderr.strip()}", flush=True)
            return None
    return python


if __name__ == "__main__":
    sys.exit(main())
