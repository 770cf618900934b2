from django.core.management.base import BaseCommand

from market.pipelines import QuotesPipeline
from streaming.runner import run_pipeline


class Command(BaseCommand):
    help = "Consume market.quotes: store every quote once and keep the latest per symbol in Redis; runs until stopped."

    def handle(self, *args, **options):
        run_pipeline(QuotesPipeline())
