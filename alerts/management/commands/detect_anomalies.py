from django.core.management.base import BaseCommand

from alerts.pipelines import AnomalyPipeline
from streaming.runner import run_pipeline


class Command(BaseCommand):
    help = ("Consume market.trades and market.quotes, detect price spikes, volume anomalies, spread blowouts, "
            "crossed quotes and stale feeds; store and publish alerts. Runs until SIGTERM/SIGINT.")

    def handle(self, *args, **options):
        run_pipeline(AnomalyPipeline())
