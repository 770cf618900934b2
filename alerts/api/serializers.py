from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from alerts.models import Alert, AlertRule
from alerts.selectors import ALERT_STATES
from market.api.pagination import PageQuerySerializer, TimeParamField, limit_field
from streaming.schemas import symbol_upper

ALERTS_LIMIT = {"default": 100, "maximum": 1000}


def _choices(name: str, values) -> dict:
    allowed = ", ".join(values)
    return {"choices": list(values), "required": False, "help_text": f"One of {allowed}.",
            "error_messages": {"invalid_choice": f"{{input!r}} is not a {name}: use one of {allowed}"}}


class AlertQuerySerializer(PageQuerySerializer):
    pages = "alerts"
    # No length limit here: a symbol no symbol can be is a 404 unknown_symbol, as in the paths.
    symbol = serializers.CharField(required=False, help_text="Only this symbol's alerts, e.g. AAPL.")
    severity = serializers.ChoiceField(**_choices("severity", Alert.Severity.values))
    type = serializers.ChoiceField(**_choices("type", AlertRule.Type.values))
    state = serializers.ChoiceField(**_choices("state", ALERT_STATES))
    detected_since = TimeParamField(
        required=False,
        help_text="Only alerts detected at or after this time, written as `start` is: what a client missed "
                  "since the last alert it received, whose `detected_at` it gives. `start` and `end` are event "
                  "times, and an alert can be detected long after its event time.")
    limit = limit_field(**ALERTS_LIMIT)
    FILTERS = ("symbol", "severity", "type", "state", "detected_since")

    def validate_symbol(self, value: str) -> str:
        return symbol_upper(value)

    def selection(self, attrs) -> list[str]:
        return [f"{name}={attrs[name]}" for name in self.FILTERS if name in attrs]


class AlertSerializer(serializers.Serializer):
    id = serializers.CharField()
    rule = serializers.CharField(source="rule.slug", allow_null=True, help_text="The rule's slug (null if deleted).")
    type = serializers.CharField()
    severity = serializers.ChoiceField(choices=Alert.Severity.values)
    symbol = serializers.CharField()
    message = serializers.CharField()
    observed = serializers.JSONField(help_text="The measured values behind the alert.")
    time = serializers.DateTimeField(source="event_time", help_text="Event time of the trade or quote behind it.")
    detected_at = serializers.DateTimeField()
    state = serializers.SerializerMethodField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    acknowledged_by = serializers.CharField(source="acknowledged_by.username", allow_null=True)
    resolved_at = serializers.DateTimeField(allow_null=True)
    resolved_by = serializers.CharField(source="resolved_by.username", allow_null=True)

    @extend_schema_field(serializers.ChoiceField(choices=ALERT_STATES))
    def get_state(self, alert: Alert) -> str:
        if alert.resolved_at is not None:
            return "resolved"
        return "acknowledged" if alert.acknowledged_at is not None else "open"


class AlertPageSerializer(serializers.Serializer):
    alerts = AlertSerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="The next page, or null on the last one.")
