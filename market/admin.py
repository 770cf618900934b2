from django.contrib import admin

from market.models import Symbol


@admin.register(Symbol)
class SymbolAdmin(admin.ModelAdmin):
    list_display = ["ticker", "name", "active", "created_at"]
    list_editable = ["active"]
    search_fields = ["ticker", "name"]
