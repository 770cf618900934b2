"""RedisRetry: while Redis answers every call tries it; after it did not, the next try waits."""

from streaming.redis import RedisRetry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_after_a_failure_redis_is_tried_again_only_when_the_retry_time_has_come():
    clock = Clock()
    retry = RedisRetry(retry_seconds=5, clock=clock)
    assert retry.due() and not retry.away
    retry.failed()
    assert retry.away and not retry.due()
    clock.now += 4.9
    assert not retry.due()
    clock.now += 0.1
    assert retry.due() and retry.away  # still away until it answers
    retry.failed()
    assert not retry.due()
    retry.answered()
    assert retry.due() and not retry.away
