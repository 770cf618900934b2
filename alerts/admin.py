from django.contrib import admin, messages

from alerts import services
from alerts.models import Alert, AlertRule


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ["slug", "type", "enabled", "cooldown_seconds", "updated_at"]
    list_filter = ["type", "enabled"]
    list_editable = ["enabled"]
    search_fields = ["slug"]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["event_time", "symbol", "type", "severity", "message", "acknowledged_by", "acknowledged_at",
                    "resolved_by", "resolved_at"]
    list_filter = ["severity", "type", "symbol", ("acknowledged_at", admin.EmptyFieldListFilter),
                   ("resolved_at", admin.EmptyFieldListFilter)]
    search_fields = ["id", "symbol", "message"]
    date_hierarchy = "event_time"
    readonly_fields = ["id", "rule", "type", "severity", "symbol", "message", "observed", "event_time", "detected_at",
                       "acknowledged_by", "acknowledged_at", "resolved_by", "resolved_at"]
    actions = ["acknowledge", "resolve"]

    def has_add_permission(self, request):
        return False  # alerts come from the detectors only

    @admin.action(description="Acknowledge selected alerts")
    def acknowledge(self, request, queryset):
        for alert in queryset:
            services.alert_acknowledge(alert=alert, user=request.user)
        self.message_user(request, f"{queryset.count()} alert(s) acknowledged by {request.user}", messages.SUCCESS)

    @admin.action(description="Resolve selected alerts")
    def resolve(self, request, queryset):
        for alert in queryset:
            services.alert_resolve(alert=alert, user=request.user)
        self.message_user(request, f"{queryset.count()} alert(s) resolved by {request.user}", messages.SUCCESS)
