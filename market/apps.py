from django.apps import AppConfig


class MarketConfig(AppConfig):
    name = "market"
    verbose_name = "Market data"

    def ready(self) -> None:
        from market import checks  # noqa: F401 - registers the storage-mode check
