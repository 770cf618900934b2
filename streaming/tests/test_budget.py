"""TokenBucket: the average rate and the burst, over any sequence of takes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming.budget import TokenBucket


def test_a_full_bucket_gives_its_burst_then_its_rate():
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert bucket.take(20, now=0.0) and not bucket.take(1, now=0.0)
    assert not bucket.take(6, now=0.5) and bucket.take(5, now=0.5)  # half a second: 5 tokens
    assert bucket.take(20, now=100.0) and not bucket.take(1, now=100.0)  # never more than the burst


def test_a_refused_take_takes_nothing_and_a_clock_going_back_gives_nothing():
    bucket = TokenBucket(rate=1, burst=3, now=10.0)
    assert not bucket.take(4, now=10.0) and bucket.take(3, now=10.0)
    assert not bucket.take(1, now=5.0) and bucket.take(1, now=11.0)


@pytest.mark.parametrize("rate, burst", [(0, 1), (1, 0), (-1, 5)])
def test_a_bucket_needs_a_positive_rate_and_burst(rate, burst):
    with pytest.raises(ValueError, match="must be positive"):
        TokenBucket(rate=rate, burst=burst, now=0.0)


@given(takes=st.lists(st.tuples(st.floats(0, 5), st.floats(0, 50)), max_size=60),
       rate=st.floats(0.5, 100), burst=st.floats(1, 200))
def test_what_is_taken_never_exceeds_the_burst_plus_the_rate_over_the_time(takes, rate, burst):
    bucket, now, taken = TokenBucket(rate=rate, burst=burst, now=0.0), 0.0, 0.0
    for step, tokens in takes:
        now += step
        if bucket.take(tokens, now=now):
            taken += tokens
    assert taken <= burst + rate * now + 1e-6
