"""Signals become valid ``alerts`` messages with deterministic ids."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from alerts.domain.detectors import DEFAULT_RULES, AnomalyEngine, alert_id, to_message
from streaming.schemas import Alert, decoder_for, encode

from .factories import at, quote, steady, trade


def one_of_each() -> list:
    engine = AnomalyEngine(DEFAULT_RULES)
    signals = engine.on_trades([trade("AAPL", 0, "100.00"), trade("AAPL", 1, "107.00")])
    signals += engine.on_quotes([quote("AAPL", 0, "100.01", "100.00")])
    msft = steady("MSFT", 0, 31 * 60, every=60) + steady("MSFT", 31 * 60, 32 * 60 + 1, size=500, every=60)
    signals += engine.on_trades(msft)
    signals += engine.on_trades(steady("TSLA", 32 * 60 + 2, 32 * 60 + 200))
    signals += engine.advance(at(32 * 60 + 199))
    return signals


def test_every_rule_type_makes_a_message_that_survives_the_topic_codec():
    signals = one_of_each()
    assert {s.type for s in signals} == {"price_spike", "crossed_quote", "volume_anomaly", "stale_feed"}
    detected_at = datetime(2024, 1, 2, 15, 0, tzinfo=UTC)
    for signal in signals:
        message = to_message(signal, detected_at)
        decoded = decoder_for(Alert).decode(encode(message))
        assert decoded == message
        assert (decoded.id, decoded.ts, decoded.detected_at, decoded.observed) == (
            signal.id, signal.ts, detected_at, signal.observed)
        assert all(type(v) in (str, int, float) for v in signal.observed.values())


def test_to_message_converts_detected_at_to_utc_and_refuses_a_naive_one():
    [signal] = AnomalyEngine(DEFAULT_RULES).on_quotes([quote("AAPL", 0, "100.01", "100.00")])
    paris = timezone(timedelta(hours=1))
    message = to_message(signal, datetime(2024, 1, 2, 16, 0, tzinfo=paris))
    assert message.detected_at == datetime(2024, 1, 2, 15, 0, tzinfo=UTC) and message.detected_at.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        to_message(signal, datetime(2024, 1, 2, 15, 0))


def test_alert_ids_are_short_stable_and_depend_on_every_part():
    base = alert_id("price-spike", "AAPL", at(0))
    assert re.fullmatch(r"al-[0-9a-f]{24}", base)
    assert base == alert_id("price-spike", "AAPL", at(0).astimezone(timezone(timedelta(hours=-5))))
    variants = {
        alert_id("price-spike2", "AAPL", at(0)),
        alert_id("price-spike", "AAPLX", at(0)),
        alert_id("price-spike", "AAPL", at(0.000001)),
        alert_id("price-spike", "AAPL", at(0), "high"),
    }
    assert base not in variants and len(variants) == 4
    # Fixed forever: stored alert ids must match after a deploy.
    assert base == "al-" + __import__("hashlib").blake2b(
        b"price-spike\x1fAAPL\x1f2024-01-02T14:00:00.000000Z", digest_size=12).hexdigest()


def test_advance_refuses_a_naive_time():
    with pytest.raises(ValueError, match="timezone-aware"):
        AnomalyEngine(DEFAULT_RULES).advance(datetime(2024, 1, 2, 15, 0))
