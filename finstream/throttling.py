"""DRF's rate throttles (API_THROTTLE_ANON, API_THROTTLE_USER), counting in Redis.

The counts are in Django's cache, Redis, so that the web processes
(finstream/serve.py) share one count per client. When Redis cannot be
reached, a request is let through uncounted: the reads the throttles guard
need only PostgreSQL, and a rate limit must not take them down with Redis.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError
from rest_framework import throttling

from finstream.logs import error_text

log = logging.getLogger(__name__)
_WARN_EVERY = 60.0  # seconds: one warning a minute, not one per request
_last_warning = float("-inf")


class _LetThroughWithoutRedis:
    def allow_request(self, request, view) -> bool:
        global _last_warning
        try:
            return super().allow_request(request, view)
        except RedisError as error:
            if time.monotonic() - _last_warning >= _WARN_EVERY:
                _last_warning = time.monotonic()
                log.warning("API throttling: Redis unreachable (%s); requests are let through uncounted",
                            error_text(error))
            return True


class AnonRateThrottle(_LetThroughWithoutRedis, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(_LetThroughWithoutRedis, throttling.UserRateThrottle):
    pass
