"""Writes of alerts and alert rules."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from alerts.domain.rules import DEFAULT_RULES
from alerts.domain.signals import AlertSignal, to_message
from alerts.models import Alert, AlertRule, DetectorProgress
from streaming.schemas import Alert as AlertMessage

_INSERT = """
    INSERT INTO alerts_alert (id, rule_id, type, severity, symbol, message, observed, event_time, detected_at)
    SELECT a.id, r.id, a.type, a.severity, a.symbol, a.message, a.observed::jsonb, a.event_time, a.detected_at
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                %s::timestamptz[], %s::timestamptz[])
         AS a(id, rule, type, severity, symbol, message, observed, event_time, detected_at)
    LEFT JOIN alerts_alertrule r ON r.slug = a.rule
    ORDER BY a.id
    ON CONFLICT (id) DO NOTHING
    RETURNING id
"""


def alerts_store(*, signals: Sequence[AlertSignal], detected_at: datetime) -> list[AlertMessage]:
    """Store the alerts not stored before and return them as messages to publish, in the
    signals' order (the order the engine raised them: an episode's start before its escalations).

    Alert ids are deterministic, so a signal raised again after a crash and
    replay is a conflict here and is neither stored nor published twice.
    """
    unique = {signal.id: signal for signal in signals}
    if not unique:
        return []
    columns = list(zip(*[
        (s.id, s.rule, s.type, s.severity, s.symbol, s.message, json.dumps(s.observed), s.ts, detected_at)
        for s in unique.values()
    ]))
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, [list(column) for column in columns])
        inserted = {row[0] for row in cursor.fetchall()}
    return [to_message(signal, detected_at) for alert_id, signal in unique.items() if alert_id in inserted]


def detector_progress_save(*, topic: str, watermark: datetime) -> None:
    """Record that detection has reached `watermark` in the topic's event time (never moving it
    back). Call inside the batch's transaction."""
    table = DetectorProgress._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (topic, watermark, updated_at) VALUES (%s, %s, now())
            ON CONFLICT (topic) DO UPDATE SET watermark = GREATEST({table}.watermark, EXCLUDED.watermark),
                updated_at = now()
            """,
            [topic, watermark],
        )


def alert_rules_seed() -> int:
    """Create the default rules that do not exist yet (by slug); returns how many were new."""
    created = 0
    for config in DEFAULT_RULES:
        _rule, was_created = AlertRule.objects.get_or_create(
            slug=config.rule,
            defaults={
                "type": config.type,
                "enabled": config.enabled,
                "params": _params_json(config.params),
                "cooldown_seconds": config.cooldown_seconds,
            },
        )
        created += was_created
    return created


def _params_json(params) -> dict:
    return dataclasses.asdict(params)


_STATE_FIELDS = ["acknowledged_by", "acknowledged_at", "resolved_by", "resolved_at"]


@transaction.atomic
def alert_acknowledge(*, alert: Alert, user) -> Alert:
    """Idempotent: acknowledging twice keeps the first who and when, also when two people do it at
    once (the update is conditional, so the second finds it done); `alert` is refreshed to say so."""
    Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
        acknowledged_by=user, acknowledged_at=timezone.now())
    alert.refresh_from_db(fields=_STATE_FIELDS)
    return alert


@transaction.atomic
def alert_resolve(*, alert: Alert, user) -> Alert:
    """Resolving also acknowledges. Idempotent like alert_acknowledge."""
    now = timezone.now()
    Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(acknowledged_by=user, acknowledged_at=now)
    Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(resolved_by=user, resolved_at=now)
    alert.refresh_from_db(fields=_STATE_FIELDS)
    return alert
