"""Consumer offsets in PostgreSQL: written with the data, read on assignment."""

from __future__ import annotations

from collections.abc import Mapping

from django.db import connection

from streaming.models import ConsumerOffset

Offsets = Mapping[tuple[str, int], int]  # (topic, partition) -> next offset to read


def offsets_save(*, group: str, offsets: Offsets) -> None:
    """Upsert next offsets; never moves one backwards. Call inside the data's transaction."""
    if not offsets:
        return
    rows = sorted(offsets.items())
    placeholders = ", ".join(["(%s, %s, %s, %s, now())"] * len(rows))
    params: list[object] = []
    for (topic, partition), next_offset in rows:
        params += [group, topic, partition, next_offset]
    table = ConsumerOffset._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} ("group", topic, partition, next_offset, updated_at)
            VALUES {placeholders}
            ON CONFLICT ("group", topic, partition)
            DO UPDATE SET next_offset = GREATEST({table}.next_offset, EXCLUDED.next_offset), updated_at = now()
            """,
            params,
        )


def offsets_load(*, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    rows = ConsumerOffset.objects.filter(group=group, topic__in=topics).values_list("topic", "partition", "next_offset")
    return {(topic, partition): next_offset for topic, partition, next_offset in rows}
