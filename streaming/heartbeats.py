"""Liveness of long-running consumers, as Redis keys that expire.

A consumer beats once per loop iteration (throttled to once a second); `/ready`
and the pipeline page read the age of each beat.
"""

from __future__ import annotations

import time

from django.conf import settings

from streaming.redis import redis_client

KEY = "finstream:heartbeat:{}"


def heartbeat(name: str) -> None:
    redis_client().set(KEY.format(name), repr(time.time()), ex=settings.HEARTBEAT_TTL_SECONDS)


def heartbeat_ages(names: list[str]) -> dict[str, float | None]:
    if not names:
        return {}
    values = redis_client().mget([KEY.format(name) for name in names])
    now = time.time()
    return {name: (now - float(value)) if value is not None else None for name, value in zip(names, values)}
