"""A token bucket: what a client may ask of a server per second (pure: the caller passes the clock)."""

from __future__ import annotations


class TokenBucket:
    """Up to `rate` tokens a second on average, and `burst` at once; starts full."""

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"rate and burst must be positive, got {rate} and {burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def take(self, tokens: float, now: float) -> bool:
        """Take `tokens` if there are as many; a refused take takes none."""
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = max(self._at, now)
        if tokens > self._tokens:
            return False
        self._tokens -= tokens
        return True
