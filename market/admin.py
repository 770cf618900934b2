from django.contrib import admin

from finstream.auth import AttemptLimitedAdminAuthenticationForm
from market.models import Symbol


@admin.register(Symbol)
class SymbolAdmin(admin.ModelAdmin):
    list_display = ["ticker", "name", "active", "created_at"]
    list_editable = ["active"]
    search_fields = ["ticker", "name"]

    def get_readonly_fields(self, request, obj=None):
        # The ticker is the key of every stored trade, quote and candle: "renaming" it would add a
        # second symbol beside the first.
        return ["ticker"] if obj is not None else []

    def has_delete_permission(self, request, obj=None):
        # The consumers register a symbol once per process and would not bring a deleted one back;
        # its stored data would vanish from the API. Unticking "active" hides it, and undoes.
        return False


admin.site.login_form = AttemptLimitedAdminAuthenticationForm  # says when an address's log-ins are held back
