from django.core.management.base import BaseCommand, CommandError

from streaming.kafka import KafkaUnavailable, topics_ensure
from streaming.topics import TOPIC_SPECS


class Command(BaseCommand):
    help = "Create FinStream's Kafka topics that do not exist yet (idempotent)."

    def handle(self, *args, **options):
        try:
            created = topics_ensure()
        except KafkaUnavailable as error:
            raise CommandError(str(error)) from None
        for spec in TOPIC_SPECS:
            state = "created" if spec.name in created else "exists"
            self.stdout.write(f"  {spec.name:<24} {spec.partition_count} partition(s)  {state}")
