from django.core.management.base import BaseCommand

from market.pipelines import TradesPipeline
from streaming.runner import run_pipeline


class Command(BaseCommand):
    help = ("Consume market.trades: store every trade once and keep the 1m/5m/15m/1h/4h/1d candles current; "
            "runs until SIGTERM/SIGINT.")

    def handle(self, *args, **options):
        run_pipeline(TradesPipeline())
