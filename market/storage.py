"""Time-series storage: TimescaleDB hypertables, or native range partitions.

The mode is chosen once per database, when migration 0002 creates the tables:
with FINSTREAM_STORAGE_MODE=auto (the default) the tables become hypertables
if PostgreSQL offers the `timescaledb` extension, and natively range-partitioned
tables otherwise. The mode is recorded in `finstream_storage_mode` so that every
process, `/ready` and `manage.py check` report the mode the tables really have,
not the one the settings would pick today.

In partition mode, partitions are created ahead by a Celery beat task, and the
ingest path creates the partitions a batch needs before writing it (a replay of
a recorded day from 2019 must not fail for want of a partition).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from psycopg.errors import LockNotAvailable

log = logging.getLogger(__name__)

TIMESCALE = "timescale"
PARTITIONS = "partitions"


@dataclass(frozen=True)
class SeriesTable:
    name: str
    columns: str
    primary_key: str
    partition_days: int  # 1 = daily partitions / chunks; 30 = monthly (calendar months)
    # Whether dropping its rows records their (symbol, day)s as retired (market.models.RetiredTradeDay).
    retires_days: bool = False

    def partition_bounds(self, day: date) -> tuple[date, date, str]:
        """The partition holding `day`: [start, end) and its table name."""
        if self.partition_days == 1:
            return day, day + timedelta(days=1), f"{self.name}_p{day:%Y%m%d}"
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return start, end, f"{self.name}_p{start:%Y%m}"


TRADES = SeriesTable(
    name="market_trade",
    columns="""
        symbol varchar(16) NOT NULL,
        time timestamptz NOT NULL,
        trade_id varchar(64) NOT NULL,
        seq bigint NOT NULL,
        price numeric(20, 8) NOT NULL,
        size numeric(24, 8) NOT NULL,
        side varchar(4) NOT NULL,
        received_at timestamptz NOT NULL
    """,
    primary_key="symbol, time, trade_id",
    partition_days=1,
    retires_days=True,
)
QUOTES = SeriesTable(
    name="market_quote",
    columns="""
        symbol varchar(16) NOT NULL,
        time timestamptz NOT NULL,
        quote_id varchar(64) NOT NULL,
        bid numeric(20, 8) NOT NULL,
        ask numeric(20, 8) NOT NULL,
        bid_size numeric(24, 8) NOT NULL,
        ask_size numeric(24, 8) NOT NULL
    """,
    primary_key="symbol, time, quote_id",
    partition_days=1,
)
CANDLES = SeriesTable(
    name="market_candle",
    columns="""
        symbol varchar(16) NOT NULL,
        interval varchar(3) NOT NULL,
        time timestamptz NOT NULL,
        open numeric(20, 8) NOT NULL,
        high numeric(20, 8) NOT NULL,
        low numeric(20, 8) NOT NULL,
        close numeric(20, 8) NOT NULL,
        volume numeric(38, 8) NOT NULL,
        trades bigint NOT NULL,
        notional numeric(38, 16) NOT NULL,  -- widened to (50, 16) by migration 0003
        first_trade_time timestamptz NOT NULL,
        first_trade_seq bigint NOT NULL,
        first_trade_id varchar(64) NOT NULL,
        last_trade_time timestamptz NOT NULL,
        last_trade_seq bigint NOT NULL,
        last_trade_id varchar(64) NOT NULL,
        updated_at timestamptz NOT NULL
    """,
    primary_key="symbol, interval, time",
    partition_days=30,
)
SERIES_TABLES = (TRADES, QUOTES, CANDLES)

# Partitions already known to exist in this process: the ingest path asks for
# the partitions of every batch, and only the first ask per day costs a query.
_known_partitions: set[str] = set()


def timescale_available(cursor) -> bool:
    cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return cursor.fetchone() is not None


def choose_mode(cursor) -> str:
    wanted = settings.STORAGE_MODE
    available = timescale_available(cursor)
    if wanted == TIMESCALE and not available:
        raise RuntimeError(
            "FINSTREAM_STORAGE_MODE=timescale but this PostgreSQL has no timescaledb extension: "
            "install it or use FINSTREAM_STORAGE_MODE=auto"
        )
    if wanted == "auto":
        return TIMESCALE if available else PARTITIONS
    return wanted


def create_series_tables(schema_editor) -> str:
    """Create the time-series tables in the chosen mode (used by migration 0002)."""
    with schema_editor.connection.cursor() as cursor:
        mode = choose_mode(cursor)
        cursor.execute("CREATE TABLE finstream_storage_mode (mode text NOT NULL, created_at timestamptz NOT NULL)")
        cursor.execute("INSERT INTO finstream_storage_mode VALUES (%s, now())", [mode])
        if mode == TIMESCALE:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        for table in SERIES_TABLES:
            partition_clause = "" if mode == TIMESCALE else " PARTITION BY RANGE (time)"
            cursor.execute(
                f"CREATE TABLE {table.name} ({table.columns}, PRIMARY KEY ({table.primary_key})){partition_clause}"
            )
            if mode == TIMESCALE:
                cursor.execute(
                    "SELECT create_hypertable(%s, 'time', chunk_time_interval => %s::interval)",
                    [table.name, f"{table.partition_days} days"],
                )
    log.info("time-series tables created in %s mode", mode)
    return mode


def drop_series_tables(schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        for table in SERIES_TABLES:
            cursor.execute(f"DROP TABLE IF EXISTS {table.name} CASCADE")
        cursor.execute("DROP TABLE IF EXISTS finstream_storage_mode")


def storage_mode() -> str | None:
    """The mode the tables were created in, or None before migration 0002."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('finstream_storage_mode') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return None
        cursor.execute("SELECT mode FROM finstream_storage_mode LIMIT 1")
        row = cursor.fetchone()
    return row[0] if row else None


def partitions_ensure(*, table: SeriesTable, days: set[date]) -> list[str]:
    """Create the partitions of `table` that hold `days`; returns those created.

    Idempotent and safe to run from several processes at once: an advisory
    lock serialises creators and IF NOT EXISTS makes a second creation a no-op.
    Runs in its own short transaction, so call it before (not inside) the
    transaction that writes the rows.
    """
    wanted = {}
    # Retention (in the Celery worker) drops daily partitions from before yesterday: this process's
    # memory of those is not to be trusted.
    droppable_before = datetime.now(UTC).date() - timedelta(days=1) if table.partition_days == 1 else date.min
    for day in days:
        start, end, name = table.partition_bounds(day)
        if name not in _known_partitions or start < droppable_before:
            wanted[name] = (start, end)
    if not wanted or storage_mode() != PARTITIONS:
        return []
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [table.name])
        for name, (start, end) in sorted(wanted.items()):
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
            if not cursor.fetchone()[0]:
                cursor.execute(
                    f"CREATE TABLE {name} PARTITION OF {table.name} FOR VALUES FROM (%s) TO (%s)",
                    [datetime.combine(start, datetime.min.time(), UTC), datetime.combine(end, datetime.min.time(), UTC)],
                )
                created.append(name)
    _known_partitions.update(wanted)
    if created:
        log.info("created partitions %s", ", ".join(created))
    return created


def partitions_ensure_ahead(*, today: date, days_ahead: int) -> list[str]:
    """Create partitions from `today` to `days_ahead` days later for every table."""
    days = {today + timedelta(days=offset) for offset in range(days_ahead + 1)}
    created = []
    for table in SERIES_TABLES:
        created += partitions_ensure(table=table, days=days)
    return created


def partitions_list(*, table: SeriesTable) -> list[tuple[str, datetime, datetime]]:
    """(name, start, end) of every partition of `table`, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = %s::regclass
            """,
            [table.name],
        )
        rows = cursor.fetchall()
    partitions = []
    for name, bound in rows:
        # FOR VALUES FROM ('2026-11-25 00:00:00+00') TO ('2026-11-26 00:00:00+00')
        start_text, end_text = bound.split("'")[1], bound.split("'")[3]
        partitions.append((name, datetime.fromisoformat(start_text), datetime.fromisoformat(end_text)))
    return sorted(partitions, key=lambda p: p[1])


# The (symbol, day)s of a partition or chunk, from each symbol's first and last trade: a walk of the
# primary key's index, not a scan of a day's trades (done while the table is locked).
_RETIRE_DAYS = """
    WITH RECURSIVE symbols AS (
        (SELECT symbol FROM {source} ORDER BY symbol LIMIT 1)
        UNION ALL
        SELECT (SELECT t.symbol FROM {source} t WHERE t.symbol > s.symbol ORDER BY t.symbol LIMIT 1)
        FROM symbols s WHERE s.symbol IS NOT NULL
    )
    INSERT INTO market_retiredtradeday (symbol, day, retired_at)
    SELECT s.symbol, day::date, now()
    FROM symbols s,
        LATERAL (SELECT min(time) AS first, max(time) AS last FROM {source} t WHERE t.symbol = s.symbol) span,
        generate_series((span.first AT TIME ZONE 'UTC')::date, (span.last AT TIME ZONE 'UTC')::date,
                        interval '1 day') AS day
    WHERE s.symbol IS NOT NULL
    ON CONFLICT (symbol, day) DO NOTHING
"""


# How long retention waits for a table's lock; every other use of the table waits behind it meanwhile.
RETENTION_LOCK_WAIT_SECONDS = 10


def partitions_drop_older_than(*, table: SeriesTable, cutoff: datetime) -> list[str]:
    """Drop whole partitions (or TimescaleDB chunks) that end at or before `cutoff`; for trades, record
    their (symbol, day)s as retired first.

    The table is locked before the days are recorded, as dropping a partition would lock it anyway: a
    consumer's transaction writing to it then either committed before (its trades are recorded and go
    with the partition) or writes after the drop, finds the partition it meant to write to gone and
    stores its batch again (streaming/runner.py), seeing the days retired this time. A table held
    longer than RETENTION_LOCK_WAIT_SECONDS (a long read) is left to the next run.
    """
    mode = storage_mode()
    try:
        return _drop_older_than(table=table, mode=mode, cutoff=cutoff)
    except OperationalError as error:
        if not isinstance(error.__cause__, LockNotAvailable):
            raise
        # A long read holds the table: waiting on would queue every write and read behind this lock.
        log.warning("retention of %s waited %d s for the table and will try again at its next run",
                    table.name, RETENTION_LOCK_WAIT_SECONDS)
        return []


def _drop_older_than(*, table: SeriesTable, mode: str | None, cutoff: datetime) -> list[str]:
    with transaction.atomic(), connection.cursor() as cursor:
        if not _ending_by(table=table, mode=mode, cutoff=cutoff):
            return []
        # In partitions mode DROP TABLE would lock the table anyway; drop_chunks locks only its chunks,
        # and there only recording the days needs the table locked first.
        if mode != TIMESCALE or table.retires_days:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{RETENTION_LOCK_WAIT_SECONDS}s"])
            cursor.execute(f"LOCK TABLE {table.name} IN ACCESS EXCLUSIVE MODE")
        doomed = _ending_by(table=table, mode=mode, cutoff=cutoff)  # a replay may have made one meanwhile
        if table.retires_days:
            for source in doomed:
                cursor.execute(_RETIRE_DAYS.format(source=source))
        if mode == TIMESCALE:
            cursor.execute("SELECT drop_chunks(%s, older_than => %s)", [table.name, cutoff])
            return [row[0] for row in cursor.fetchall()]
        for name in doomed:
            cursor.execute(f"DROP TABLE {name}")
            _known_partitions.discard(name)
        return doomed


def _ending_by(*, table: SeriesTable, mode: str | None, cutoff: datetime) -> list[str]:
    """The partitions (or TimescaleDB chunks) of `table` that end at or before `cutoff`."""
    if mode == TIMESCALE:
        with connection.cursor() as cursor:
            cursor.execute("SELECT show_chunks(%s, older_than => %s)::text", [table.name, cutoff])
            return [chunk for (chunk,) in cursor.fetchall()]
    return [name for name, _start, end in partitions_list(table=table) if end <= cutoff]
