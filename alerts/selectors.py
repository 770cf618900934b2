"""Reads of alerts and alert rules."""

from __future__ import annotations

from django.db.models import Count, Max

from alerts.domain.rules import RuleConfig, rule_config_from_params
from alerts.models import AlertRule


def alert_rule_configs() -> list[RuleConfig]:
    """Every rule as the detectors' configuration. Raises RuleConfigError for a bad row."""
    return [
        rule_config_from_params(rule=row.slug, type=row.type, params=row.params,
                                symbol_overrides=row.symbol_overrides, enabled=row.enabled,
                                cooldown_seconds=row.cooldown_seconds)
        for row in AlertRule.objects.order_by("slug")
    ]


def alert_rules_version() -> tuple:
    """Changes whenever a rule is added, removed or edited."""
    summary = AlertRule.objects.aggregate(count=Count("id"), updated=Max("updated_at"))
    return (summary["count"], summary["updated"])
