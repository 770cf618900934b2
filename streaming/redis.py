"""The shared Redis client of a process."""

from functools import cache

import redis
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Redis did not answer (down, restarting, too slow): what callers retry or report as unavailable. Other
# RedisErrors (a script's error, a wrong type) are bugs and propagate.
REDIS_AWAY = (RedisConnectionError, RedisTimeoutError)


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
