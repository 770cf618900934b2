"""Celery tasks that beat schedules: partitions ahead, retention, candle
sealing and the rolling market statistics. Each calls one service."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from celery import shared_task
from django.conf import settings

from market import rollups, storage

log = logging.getLogger(__name__)


@shared_task
def partitions_create_ahead() -> list[str]:
    created = storage.partitions_ensure_ahead(today=datetime.now(UTC).date(), days_ahead=settings.PARTITIONS_AHEAD_DAYS)
    log.info("partitions ahead (%s mode): created %s", storage.storage_mode(), created or "none")
    return created


@shared_task
def retention_apply() -> dict[str, list[str] | int]:
    now = datetime.now(UTC)
    report = {
        "trades": storage.partitions_drop_older_than(
            table=storage.TRADES, cutoff=now - timedelta(days=settings.TRADES_RETENTION_DAYS)),
        "quotes": storage.partitions_drop_older_than(
            table=storage.QUOTES, cutoff=now - timedelta(days=settings.QUOTES_RETENTION_DAYS)),
        "fine_candles": rollups.fine_candles_delete_older_than(
            cutoff=now - timedelta(days=settings.FINE_CANDLES_RETENTION_DAYS)),
    }
    log.info("retention (%s mode): %s", storage.storage_mode(), report)
    return report


@shared_task
def candles_seal(interval: str, lookback_minutes: int) -> int:
    """Recompute closed candles of `interval` from the stored trades; repair differences."""
    now = datetime.now(UTC)
    return rollups.candles_seal(interval=interval, since=now - timedelta(minutes=lookback_minutes), now=now)


@shared_task
def market_stats_refresh() -> int:
    return rollups.market_stats_refresh(now=datetime.now(UTC))
