"""`manage.py check` reports which storage mode the time-series tables use."""

from django.core.checks import Info, Warning, register
from django.db import DatabaseError


@register("database", deploy=False)
def storage_mode_check(app_configs, databases=None, **kwargs):
    if not databases:
        return []
    from market.storage import storage_mode

    try:
        mode = storage_mode()
    except DatabaseError as error:
        return [Warning(f"could not read the storage mode: {error}".strip(), id="market.W001")]
    if mode is None:
        return [Info("time-series tables not created yet: run `manage.py migrate`", id="market.I002")]
    return [Info(f"time-series storage mode: {mode}", id="market.I001")]
