from django.conf import settings
from django.core.management.base import BaseCommand

from streaming.relay import RelayPipeline
from streaming.runner import RunnerOptions, run_pipeline


class Command(BaseCommand):
    help = ("Relay market.trades, market.quotes, market.candles and alerts to the WebSocket clients (the web "
            "processes' hubs), one group_send per batch; runs until SIGTERM/SIGINT.")

    def add_arguments(self, parser):
        parser.add_argument("--per-event", action="store_true",
                            help="one group_send per event instead (slower by far: for measuring what batching "
                                 "buys, bench/websocket_fanout.py)")

    def handle(self, *args, **options):
        run_pipeline(RelayPipeline(per_event=options["per_event"]),
                     options=RunnerOptions(batch_wait=settings.RELAY_BATCH_WAIT_MS / 1000))
