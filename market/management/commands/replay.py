"""`manage.py replay FILE`: recorded trades and quotes from CSV onto Kafka."""

import gzip
import io
import sys
import time
from itertools import chain
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from finstream import tracing
from market.domain.pacing import Pacer
from market.domain.replay import EPOCH_UNITS, DEFAULT_COLUMNS, ReplayError, ReplayParser
from market.feeds import feed_publish, positive_or_max, stop_on_signals
from streaming import metrics
from streaming.kafka import DeliveryFailed, EventPublisher, KafkaUnavailable, kafka_cluster_reachable
from streaming.topics import QUOTES, TRADES, topic



def _open_text(path: Path):
    """The file's text lines, gunzipped when it is gzip (by its magic bytes, not its name)."""
    raw = path.open("rb")
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return raw, io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8-sig", newline="")
    return raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


class Command(BaseCommand):
    help = ("Replay recorded trades (and quotes) from a CSV file, optionally gzip, into market.trades and "
            "market.quotes with their original event times. docs/replay.md describes the format.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV file (plain or gzip) with a header row")
        parser.add_argument("--speed", default="1", help="1 = real time, 10 = ten times faster, 'max' = no pacing")
        parser.add_argument("--symbol", default=None, help="symbol for files without a symbol column")
        parser.add_argument("--epoch-unit", choices=EPOCH_UNITS, default=None,
                            help="unit of numeric timestamps (default: read from their magnitude)")
        parser.add_argument("--column", action="append", default=[], metavar="ROLE=NAME",
                            help=f"map a column, e.g. --column timestamp=trade_time; roles: "
                                 f"{', '.join(DEFAULT_COLUMNS)}")
        parser.add_argument("--delimiter", default=",", help="field delimiter (default ',')")
        parser.add_argument("--skip-bad", action="store_true",
                            help="report and skip malformed rows instead of stopping at the first")

    def handle(self, *args, **options):
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        speed = positive_or_max(options["speed"], option="--speed",
                                meaning="a factor (1 = real time, 10 = ten times faster)")
        overrides = {}
        for item in options["column"]:
            role, _, name = item.partition("=")
            if role not in DEFAULT_COLUMNS or not name:
                raise CommandError(f"--column {item!r}: use ROLE=NAME with ROLE one of {', '.join(DEFAULT_COLUMNS)}")
            overrides[role] = name
        try:
            parser = ReplayParser(default_symbol=options["symbol"], epoch_unit=options["epoch_unit"],
                                  overrides=overrides)
        except ReplayError as error:
            raise CommandError(str(error)) from None

        bad_rows = []

        def on_error(error: ReplayError) -> None:
            bad_rows.append(error)
            self.stderr.write(f"{path}: skipped {error}")

        raw, text = _open_text(path)
        size = path.stat().st_size
        try:
            messages = parser.wire_messages(text, trades_topic=topic(TRADES), quotes_topic=topic(QUOTES),
                                            delimiter=options["delimiter"],
                                            on_error=on_error if options["skip_bad"] else None)
            try:
                first = next(messages)
            except StopIteration:
                raise CommandError(f"{path}: no rows to replay") from None
            pacer = Pacer(wall_start=time.monotonic(), event_start_ms=first[3], speed=speed) if speed else None
            messages = chain([first], messages)
            kafka_cluster_reachable(timeout=10)
            should_stop = stop_on_signals()
            metrics.serve_metrics(settings.METRICS_PORT)
            tracing.configure("replay")
            show_progress = sys.stdout.isatty()

            def progress(stats):
                if show_progress:
                    done = raw.tell() / size * 100 if size else 100
                    self.stdout.write(f"\r  {done:5.1f}%  {stats.trades:,} trades  {stats.quotes:,} quotes  "
                                      f"{stats.rate(time.monotonic()):,.0f} rows/s", ending="")
                    self.stdout.flush()

            publisher = EventPublisher(name="replay")
            stats = feed_publish(messages=messages, publisher=publisher, pacer=pacer,
                                 should_stop=should_stop, on_progress=progress,
                                 progress_every=100_000 if pacer is None else 1_000)
        except ReplayError as error:
            hint = " (--skip-bad skips such rows)" if error.line is not None else ""
            raise CommandError(f"{path}: {error}{hint}") from None
        except (KafkaUnavailable, DeliveryFailed) as error:
            raise CommandError(str(error)) from None
        finally:
            text.close()
            tracing.shutdown()
        if show_progress:
            self.stdout.write("")
        elapsed = time.monotonic() - stats.started
        self.stdout.write(
            f"replayed {stats.trades:,} trades and {stats.quotes:,} quotes from {path} in {elapsed:.1f} s "
            f"({stats.rate(time.monotonic()):,.0f} rows/s)"
            + (f"; skipped {len(bad_rows)} bad rows" if bad_rows else "")
            + (f"; {parser.out_of_order_rows} rows out of time order" if parser.out_of_order_rows else "")
        )
