"""Reads of alerts and alert rules."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from django.db.models import Count, Max

from alerts.domain.rules import RuleConfig, RuleConfigError
from alerts.domain.signals import LEVEL, EpisodeSeed, alert_id, parse_ts
from alerts.models import Alert, AlertRule, DetectorProgress
from market import selectors as market_selectors


def alert_rule_configs() -> tuple[list[RuleConfig], list[str]]:
    """Every valid rule as the detectors' configuration, and what is wrong with each of the others (a
    row written past the admin's checks, by SQL or an older version): one bad row must not stop the
    rest."""
    configs, problems = [], []
    for row in AlertRule.objects.order_by("slug"):
        try:
            configs.append(row.rule_config())
        except RuleConfigError as error:
            problems.append(str(error))
    return configs, problems


def alert_episodes_before(*, until: Mapping[str, datetime], within: timedelta,
                          types: tuple[str, ...]) -> list[EpisodeSeed]:
    """The latest episode of each (rule, symbol) of `until`'s symbols and rules of `types`, from
    their stored alerts of the `within` before each symbol's bound: an alert without
    ``escalated_to`` starts one, an escalation whose id says it is of that start continues it. An
    episode whose start is older than `within` is left out (its ids need the start)."""
    if not until:
        return []
    rows = (Alert.objects.filter(symbol__in=list(until), type__in=types, rule__isnull=False,
                                 event_time__gte=min(until.values()) - within, event_time__lt=max(until.values()))
            .values_list("id", "rule__slug", "type", "symbol", "event_time", "severity", "observed"))
    # A start and its escalation can share an event time: the start first.
    rows = sorted(rows, key=lambda row: (row[4], "escalated_to" in row[6]))
    episodes: dict[tuple[str, str], EpisodeSeed] = {}
    for alert, rule, type_, symbol, ts, severity, observed in rows:
        if not until[symbol] - within <= ts < until[symbol]:
            continue
        current = episodes.get((rule, symbol))
        if "escalated_to" not in observed:
            episodes[(rule, symbol)] = EpisodeSeed(rule=rule, type=type_, symbol=symbol, start=ts, last=ts,
                                                   severity=severity)
        elif current is not None and alert == alert_id(rule, symbol, current.start, severity):
            higher = severity if LEVEL[severity] > LEVEL[current.severity] else current.severity
            episodes[(rule, symbol)] = EpisodeSeed(rule=rule, type=type_, symbol=symbol, start=current.start,
                                                   last=ts, severity=higher)
        elif (start := _episode_start(observed)) is not None and alert == alert_id(rule, symbol, start, severity):
            # An escalation of an episode whose first alert was never stored (the rule came mid-episode).
            episodes[(rule, symbol)] = EpisodeSeed(rule=rule, type=type_, symbol=symbol, start=start, last=ts,
                                                   severity=severity)
    return list(episodes.values())


def _episode_start(observed: dict) -> datetime | None:
    try:
        return parse_ts(observed["episode_start"])
    except (KeyError, TypeError, ValueError):  # alerts stored before escalations said their start
        return None


def detector_progress(*, topic: str) -> datetime | None:
    """The event time detection had reached in `topic` when it last stored a batch (None: never)."""
    return DetectorProgress.objects.filter(topic=topic).values_list("watermark", flat=True).first()


def alert_rules_version() -> tuple:
    """Changes whenever a rule is added, removed or edited."""
    summary = AlertRule.objects.aggregate(count=Count("id"), updated=Max("updated_at"))
    return (summary["count"], summary["updated"])


def alert_get(*, alert_id: str) -> Alert | None:
    return Alert.objects.select_related("rule", "acknowledged_by", "resolved_by").filter(id=alert_id).first()


ALERT_STATES = ("open", "acknowledged", "resolved")


def alert_page(*, symbol: str | None = None, severity: str | None = None, type: str | None = None,
               state: str | None = None, start: datetime | None = None, end: datetime | None = None,
               detected_since: datetime | None = None, after: tuple[datetime, str] | None = None,
               descending: bool = True, limit: int) -> list[Alert]:
    """Up to `limit` alerts matching the filters, by (event_time, id), strictly
    after `after` in the chosen order; without `symbol`, none of a hidden symbol.
    State: open (neither acknowledged nor resolved), acknowledged (but not
    resolved) or resolved."""
    alerts = Alert.objects.select_related("rule", "acknowledged_by", "resolved_by")
    if symbol:
        alerts = alerts.filter(symbol=symbol)
    elif hidden := market_selectors.symbol_tickers_hidden():
        alerts = alerts.exclude(symbol__in=hidden)
    if severity:
        alerts = alerts.filter(severity=severity)
    if type:
        alerts = alerts.filter(type=type)
    if state == "open":
        alerts = alerts.filter(acknowledged_at__isnull=True, resolved_at__isnull=True)
    elif state == "acknowledged":
        alerts = alerts.filter(acknowledged_at__isnull=False, resolved_at__isnull=True)
    elif state == "resolved":
        alerts = alerts.filter(resolved_at__isnull=False)
    if start is not None:
        alerts = alerts.filter(event_time__gte=start)
    if end is not None:
        alerts = alerts.filter(event_time__lt=end)
    if detected_since is not None:
        alerts = alerts.filter(detected_at__gte=detected_since)
    if after is not None:
        time, alert_id = after
        # (event_time, id) strictly after the cursor; the redundant bound on
        # event_time alone keeps it an index range.
        if descending:
            alerts = alerts.filter(event_time__lte=time).exclude(event_time=time, id__gte=alert_id)
        else:
            alerts = alerts.filter(event_time__gte=time).exclude(event_time=time, id__lte=alert_id)
    order = ("-event_time", "-id") if descending else ("event_time", "id")
    return list(alerts.order_by(*order)[:limit])
