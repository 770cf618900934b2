"""`manage.py simulate`: a realistic market on market.trades and market.quotes."""

import random
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection

from finstream import tracing
from market import selectors
from market.domain.candles import decimal_text
from market.domain.pacing import Pacer
from market.domain.simulator import MIN_PRICE, MarketSimulator, SymbolProfile, ground_truth_json, profile_for
from market.feeds import feed_publish, positive_or_max, stop_on_signals
from streaming import metrics
from streaming.kafka import DeliveryFailed, EventPublisher, KafkaUnavailable, kafka_cluster_reachable
from streaming.schemas import SYMBOL_RULE, is_valid_symbol, symbol_upper
from streaming.topics import QUOTES, TRADES, topic
from streaming.wire import epoch_ms

# What the broker answers for a message whose timestamp is too far in the future, and for the rest of its batch.
_FUTURE_TIMESTAMP_ERRORS = ("INVALID_TIMESTAMP", "INVALID_RECORD", "_INVALID_DIFFERENT_RECORD")


class Command(BaseCommand):
    help = ("Publish simulated trades and quotes (geometric Brownian motion, realistic spreads and sizes, "
            "optional injected anomalies with ground truth). Runs until --duration or SIGTERM/SIGINT.")

    def add_arguments(self, parser):
        parser.add_argument("--rate", default=None,
                            help="trades per second across all symbols, or 'max' (default: TRADES_PER_SECOND)")
        parser.add_argument("--duration", type=float, default=None,
                            help="seconds of event time to simulate (paced: as many wall seconds); default: "
                                 "forever, or with --rate max and no --start a day")
        parser.add_argument("--seed", type=int, default=None,
                            help="same seed, --start and start prices, same stream (prices, sizes, ids: ids name "
                                 "the seed and the start); default: a random seed")
        parser.add_argument("--symbols", default=None, help="comma-separated symbols (default: SYMBOLS)")
        parser.add_argument("--anomalies", type=float, default=0.0, metavar="RATE",
                            help="injected anomalies per symbol per simulated hour (price spikes, volume bursts); none in "
                                 "a run's first 5 minutes (spikes) or hour (bursts), an hour apart per symbol")
        parser.add_argument("--ground-truth", default=None, metavar="FILE",
                            help="write the injected anomalies as JSON to FILE (default with --anomalies: "
                                 "var/ground-truth-<seed>.json)")
        parser.add_argument("--fresh", action="store_true",
                            help="start every symbol from its profile's price (AAPL 230.00, ...), not from the close "
                                 "of its newest stored 1m candle; with --seed and --start, the same stream on every "
                                 "run")
        parser.add_argument("--start", default=None,
                            help="event time of the first event (ISO-8601); default now, and with --rate max "
                                 "--duration seconds (default a day) before now: it simulates history up to now")

    def handle(self, *args, **options):
        rate_text = options["rate"] or str(settings.TRADES_PER_SECOND)
        speed_rate = positive_or_max(rate_text, option="--rate", meaning="trades per second (e.g. 100)")
        symbols = [symbol_upper(s.strip()) for s in (options["symbols"] or ",".join(settings.SYMBOLS)).split(",") if s.strip()]
        bad = [s for s in symbols if not is_valid_symbol(s)]
        if bad or not symbols:
            raise CommandError(f"--symbols: invalid symbol(s) {bad or symbols}: use {SYMBOL_RULE}")
        seed = options["seed"] if options["seed"] is not None else random.SystemRandom().randrange(1, 10**9)
        duration = options["duration"]
        if speed_rate is None and options["start"] is None:
            # Unpaced, event time runs far ahead of the clock (~160 event seconds a second at 300k events/s)
            # and the broker refuses timestamps over an hour ahead: simulate the last --duration (or day) to now.
            duration = 86400.0 if duration is None else duration
            start = datetime.now(UTC) - timedelta(seconds=duration)
        else:
            start = self._start(options["start"])
        # 'max' still needs a nominal rate for event time: 1000 trades per event second.
        profiles = [profile_for(symbol) for symbol in symbols]
        if not options["fresh"]:
            profiles = self._from_last_prices(profiles)
        simulator = MarketSimulator(symbols=profiles, seed=seed, start=start, rate=speed_rate or 1000.0,
                                    anomaly_rate=options["anomalies"])
        until = None if duration is None else start + timedelta(seconds=duration)
        messages = simulator.wire_messages(trades_topic=topic(TRADES), quotes_topic=topic(QUOTES), until=until)
        pacer = Pacer(wall_start=time.monotonic(), event_start_ms=epoch_ms(start), speed=1.0) if speed_rate else None

        try:
            kafka_cluster_reachable(timeout=10)
        except KafkaUnavailable as error:
            raise CommandError(str(error)) from None
        should_stop = stop_on_signals()
        metrics.serve_metrics(settings.METRICS_PORT)
        tracing.configure("simulator")
        self.stdout.write(f"simulating {', '.join(symbols)} at {rate_text} trades/s, seed {seed}, from "
                          f"{start.isoformat()}" + (f", anomalies {options['anomalies']}/symbol/hour"
                                                    if options["anomalies"] else ""))
        publisher = EventPublisher(name="simulator")
        try:
            stats = feed_publish(
                messages=messages, publisher=publisher, pacer=pacer, should_stop=should_stop,
                on_progress=lambda s: self.stdout.write(
                    f"  {s.trades} trades, {s.quotes} quotes, {s.rate(time.monotonic()):,.0f} events/s"),
                progress_every=500_000 if pacer is None else 10_000,
            )
        except DeliveryFailed as error:
            hint = ""
            if speed_rate is None and any(code in str(error) for code in _FUTURE_TIMESTAMP_ERRORS):
                # Unpaced, event time runs ahead of the clock, and the broker refuses a batch with a timestamp
                # more than an hour in the future (log.message.timestamp.after.max.ms).
                hint = (" (--rate max runs event time ahead of the clock, and the broker refuses timestamps "
                        "more than an hour ahead: give a --start in the past)")
            raise CommandError(f"{error}{hint}") from None
        finally:
            tracing.shutdown()
            self._write_ground_truth(simulator, options, seed)
        elapsed = time.monotonic() - stats.started
        self.stdout.write(f"published {stats.trades} trades and {stats.quotes} quotes in {elapsed:.1f} s "
                          f"({stats.rate(time.monotonic()):,.0f} events/s)")

    def _from_last_prices(self, profiles: list[SymbolProfile]) -> list[SymbolProfile]:
        """Each symbol from where the stored market left it, so that a restarted simulator is not a jump
        in every chart (and a price-spike alert)."""
        try:
            closes = selectors.last_closes(symbols=[profile.symbol for profile in profiles])
        except DatabaseError as error:
            self.stderr.write(f"the database did not answer ({error}): starting from the profiles' prices")
            return profiles
        finally:
            connection.close()  # the one read of a process that publishes for days
        continued = [replace(profile, price=closes[profile.symbol]) if closes.get(profile.symbol, 0) >= MIN_PRICE
                     else profile for profile in profiles]
        if closes:
            self.stdout.write("continuing from the last stored prices: " + ", ".join(
                f"{profile.symbol} {decimal_text(profile.price)}" for profile in continued if profile.symbol in closes))
        return continued

    def _start(self, text):
        if text is None:
            return datetime.now(UTC)
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise CommandError(f"--start {text!r} is not an ISO-8601 time, e.g. 2026-03-02T14:30:00Z") from None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def _write_ground_truth(self, simulator, options, seed):
        path = options["ground_truth"]
        if path is None and not options["anomalies"]:
            return
        path = Path(path or settings.BASE_DIR / "var" / f"ground-truth-{seed}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(ground_truth_json(simulator.ground_truth))
        self.stdout.write(f"ground truth: {len(simulator.ground_truth)} injected anomalies in {path}")
