"""Kafka consumer offsets, held by PostgreSQL.

A consumer writes the next offset of every partition it consumed in the same
transaction as the rows it derived from those messages, and seeks to these
offsets when partitions are assigned. A crash between the database commit and
Kafka's own offset commit therefore re-reads nothing that was stored, and a
crash before the database commit re-reads everything that was not.
"""

from django.db import models


class ConsumerOffset(models.Model):
    group = models.CharField(max_length=200)
    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    next_offset = models.BigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "topic", "partition"], name="consumer_offset_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.group} {self.topic}[{self.partition}] @ {self.next_offset}"
