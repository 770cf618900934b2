"""Alert rules (managed in Django admin) and the alerts they raise."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from alerts.domain.rules import RuleConfig, RuleConfigError, rule_config_from_params


class AlertRule(models.Model):
    class Type(models.TextChoices):
        PRICE_SPIKE = "price_spike", "Price spike"
        VOLUME_ANOMALY = "volume_anomaly", "Volume anomaly"
        SPREAD_BLOWOUT = "spread_blowout", "Spread blowout"
        CROSSED_QUOTE = "crossed_quote", "Crossed or locked quote"
        STALE_FEED = "stale_feed", "Stale feed"

    slug = models.SlugField(max_length=64, unique=True, help_text="Stable rule id, part of every alert id.")
    type = models.CharField(max_length=32, choices=Type.choices)
    enabled = models.BooleanField(default=True)
    params = models.JSONField(default=dict, blank=True, help_text="Thresholds and window of the rule type.")
    symbol_overrides = models.JSONField(
        default=dict, blank=True, help_text='Per-symbol params, e.g. {"TSLA": {"threshold_pct": 8}}.'
    )
    cooldown_seconds = models.PositiveIntegerField(default=300)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        """What the detectors would refuse, refused where the rule is edited (Django admin)."""
        # The form's JSON `null`: no params (the type's defaults), no overrides. The columns are NOT NULL.
        self.params = {} if self.params is None else self.params
        self.symbol_overrides = {} if self.symbol_overrides is None else self.symbol_overrides
        try:
            self.rule_config()
        except RuleConfigError as error:
            raise ValidationError(str(error)) from error

    def rule_config(self) -> RuleConfig:
        """The detectors' configuration of this row; raises RuleConfigError when it is not valid."""
        return rule_config_from_params(rule=self.slug, type=self.type, params=self.params,
                                       symbol_overrides=self.symbol_overrides, enabled=self.enabled,
                                       cooldown_seconds=self.cooldown_seconds)


class Alert(models.Model):
    class Severity(models.TextChoices):
        LOW = "low", "Low"
        MEDIUM = "medium", "Medium"
        HIGH = "high", "High"
        CRITICAL = "critical", "Critical"

    # Deterministic from (rule, symbol, episode start): a replay after a crash
    # produces the same id, and the insert ignores it.
    id = models.CharField(max_length=64, primary_key=True)
    rule = models.ForeignKey(AlertRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts")
    type = models.CharField(max_length=32)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    symbol = models.CharField(max_length=16)
    message = models.TextField()
    observed = models.JSONField(default=dict)
    event_time = models.DateTimeField(help_text="Event time of the trade or quote that triggered it.")
    detected_at = models.DateTimeField()
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-event_time"]
        indexes = [
            models.Index(fields=["-event_time"], name="alert_time_idx"),
            models.Index(fields=["symbol", "-event_time"], name="alert_symbol_time_idx"),
            models.Index(fields=["severity", "-event_time"], name="alert_severity_time_idx"),
            # detected_since: a reconnecting client's "what came since", usually nothing
            models.Index(fields=["detected_at"], name="alert_detected_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.severity} {self.type} {self.symbol} @ {self.event_time:%Y-%m-%d %H:%M:%S}"


class DetectorProgress(models.Model):
    """The market's event time (the trades topic's watermark) detect_anomalies had reached, written with
    each batch: where a restarted detector's run before had got to."""

    topic = models.CharField(max_length=249, primary_key=True)
    watermark = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.topic} @ {self.watermark.isoformat()}"
