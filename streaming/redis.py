"""The shared Redis client of a process."""

import time
from collections.abc import Callable
from functools import cache

import redis
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Redis did not answer (down, restarting, too slow): what callers retry or report as unavailable. Other
# RedisErrors (a script's error, a wrong type) are bugs and propagate.
REDIS_AWAY = (RedisConnectionError, RedisTimeoutError)


# A Redis that hangs costs each try the socket timeout (2 s): a consumer that tried it on every batch
# would slow to a batch every few seconds.
RETRY_SECONDS = 5.0


class RedisRetry:
    """When to try Redis again after it did not answer: every call while it answers, then every
    `retry_seconds` (RETRY_SECONDS unless given)."""

    def __init__(self, *, retry_seconds: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_seconds = RETRY_SECONDS if retry_seconds is None else retry_seconds
        self._clock = clock
        self._retry_at: float | None = None  # None: Redis answered last time

    @property
    def away(self) -> bool:
        return self._retry_at is not None

    def due(self) -> bool:
        return self._retry_at is None or self._clock() >= self._retry_at

    def failed(self) -> None:
        self._retry_at = self._clock() + self.retry_seconds

    def answered(self) -> None:
        self._retry_at = None


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
