"""The time-series tables in the no-TimescaleDB mode: native range partitions,
created ahead and on demand, dropped whole by retention."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection

from market import storage


def _is_partitioned(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relkind FROM pg_class c WHERE c.relname = %s", [table])
        return cursor.fetchone()[0] == "p"


@pytest.mark.django_db
def test_migrations_create_partitioned_tables_when_timescaledb_is_missing():
    with connection.cursor() as cursor:
        assert not storage.timescale_available(cursor)
    assert storage.storage_mode() == storage.PARTITIONS
    for table in storage.SERIES_TABLES:
        assert _is_partitioned(table.name), table.name


@pytest.mark.django_db(transaction=True)
def test_partitions_are_created_once_for_the_days_asked():
    storage._known_partitions.clear()
    days = {date(2019, 3, 14), date(2019, 3, 15)}
    created = storage.partitions_ensure(table=storage.TRADES, days=days)
    assert created == ["market_trade_p20190314", "market_trade_p20190315"]
    storage._known_partitions.clear()
    assert storage.partitions_ensure(table=storage.TRADES, days=days) == []
    names = [name for name, _start, _end in storage.partitions_list(table=storage.TRADES)]
    assert {"market_trade_p20190314", "market_trade_p20190315"} <= set(names)


@pytest.mark.django_db(transaction=True)
def test_an_old_partition_another_process_dropped_is_created_again():
    storage._known_partitions.clear()
    day = date(2019, 6, 1)
    assert storage.partitions_ensure(table=storage.TRADES, days={day}) == ["market_trade_p20190601"]
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE market_trade_p20190601")  # as retention in the Celery worker does
    assert storage.partitions_ensure(table=storage.TRADES, days={day}) == ["market_trade_p20190601"]


@pytest.mark.django_db(transaction=True)
def test_candle_partitions_are_monthly_and_hold_the_whole_month():
    storage._known_partitions.clear()
    created = storage.partitions_ensure(table=storage.CANDLES, days={date(2024, 2, 29), date(2024, 2, 1)})
    assert created == ["market_candle_p202402"]
    (partition,) = [p for p in storage.partitions_list(table=storage.CANDLES) if p[0] == "market_candle_p202402"]
    assert partition[1] == datetime(2024, 2, 1, tzinfo=UTC)
    assert partition[2] == datetime(2024, 3, 1, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_partitions_are_created_ahead_for_every_table():
    storage._known_partitions.clear()
    today = date(2031, 1, 30)
    storage.partitions_ensure_ahead(today=today, days_ahead=3)
    trade_partitions = {name for name, _s, _e in storage.partitions_list(table=storage.TRADES)}
    assert {f"market_trade_p{(today + timedelta(days=d)):%Y%m%d}" for d in range(4)} <= trade_partitions
    candle_partitions = {name for name, _s, _e in storage.partitions_list(table=storage.CANDLES)}
    assert {"market_candle_p203101", "market_candle_p203102"} <= candle_partitions


@pytest.mark.django_db(transaction=True)
def test_retention_held_off_by_a_long_read_leaves_the_table_to_its_next_run(monkeypatch, caplog):
    from django.db import connections

    monkeypatch.setattr(storage, "RETENTION_LOCK_WAIT_SECONDS", 1)
    storage._known_partitions.clear()
    storage.partitions_ensure(table=storage.TRADES, days={date(2020, 1, 1)})
    reader = connections.create_connection("default")
    try:
        reader.set_autocommit(False)
        with reader.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM market_trade")  # a long read, its transaction open
        assert storage.partitions_drop_older_than(table=storage.TRADES, cutoff=datetime(2020, 1, 2, tzinfo=UTC)) == []
    finally:
        reader.rollback()
        reader.close()
    assert "retention of market_trade waited 1 s for the table and will try again" in caplog.text
    # (with the old partitions other tests made)
    assert "market_trade_p20200101" in storage.partitions_drop_older_than(
        table=storage.TRADES, cutoff=datetime(2020, 1, 2, tzinfo=UTC))


@pytest.mark.django_db(transaction=True)
def test_retention_drops_whole_partitions_older_than_the_cutoff():
    storage._known_partitions.clear()
    storage.partitions_ensure(table=storage.QUOTES, days={date(2020, 1, 1), date(2020, 1, 2), date(2020, 1, 3)})
    dropped = storage.partitions_drop_older_than(table=storage.QUOTES, cutoff=datetime(2020, 1, 3, tzinfo=UTC))
    assert dropped == ["market_quote_p20200101", "market_quote_p20200102"]
    remaining = {name for name, _s, _e in storage.partitions_list(table=storage.QUOTES)}
    assert "market_quote_p20200103" in remaining
    assert not {"market_quote_p20200101", "market_quote_p20200102"} & remaining
