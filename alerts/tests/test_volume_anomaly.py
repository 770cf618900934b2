"""volume_anomaly: a completed minute's volume more than k_sigma above its baseline (docs/alerts.md)."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.domain.signals import alert_id
from streaming.schemas import Candle

from .factories import at, engine, feed, rule, trade


def volume(cooldown: int = 300, **params):
    """The sigma test alone (min_ratio 0) unless a test sets min_ratio."""
    params.setdefault("min_ratio", 0.0)
    return engine(rule("volume_anomaly", cooldown_seconds=cooldown, **params))


def minutes(symbol: str, volumes: dict[int, float] | list[float], second: float = 30) -> list:
    """One trade per traded minute, ``second`` seconds into it, of the given size."""
    items = volumes.items() if isinstance(volumes, dict) else enumerate(volumes)
    return [trade(symbol, m * 60 + second, "100.00", str(v), seq=m) for m, v in items]


ALTERNATING = [90, 110] * 15  # mean 100, population sigma 10, exactly


def test_a_burst_after_a_full_baseline_alerts_when_the_minute_completes():
    eng = volume()
    assert feed(eng, minutes("AAPL", ALTERNATING + [131])) == []  # minute 30 is still open
    [signal] = feed(eng, minutes("AAPL", {31: 100}))
    assert signal.ts == signal.episode_start == at(31 * 60)  # the end of the bucket
    assert signal.id == alert_id("volume-anomaly", "AAPL", at(31 * 60))
    assert signal.severity == "medium"
    assert signal.observed == {
        "bucket_start": "2024-01-02T14:30:00.000000Z", "volume": 131.0, "centre": 100.0, "spread": 10.0,
        "scale": 10.0, "z": 3.1, "method": "mean", "baseline_buckets": 30, "k_sigma": 3.0,
    }
    assert signal.message == (
        "AAPL traded 131 in the minute from 14:30 UTC, 3.1σ above the mean of its last 30 traded minutes, 100 (σ 10)"
    )


@pytest.mark.parametrize(("burst", "alerts"), [(130, 0), (130.5, 1)])
def test_the_threshold_is_strictly_more_than_k_sigma(burst, alerts):
    assert len(feed(volume(), minutes("AAPL", ALTERNATING + [burst, 100]))) == alerts


NOISY = [50, 150] * 15  # mean 100, population sigma 50


@pytest.mark.parametrize(("burst", "alerts"), [(260, 0), (500, 0), (500.5, 1)])
def test_by_default_a_burst_must_also_be_more_than_five_times_the_centre(burst, alerts):
    # 260 is 3.2 sigma above a mean of 100 but only 2.6x it: the default rule stays quiet.
    eng = engine(rule("volume_anomaly"))
    assert len(feed(eng, minutes("AAPL", NOISY + [burst, 100]))) == alerts


@pytest.mark.parametrize(("burst", "alerts"), [(290, 0), (300, 0), (300.5, 1), (400, 1)])
def test_a_burst_more_than_20_sigma_above_a_steady_baseline_needs_no_ratio(burst, alerts):
    # Against 100 +- 10 a minute of 3x is 20 sigma out: a spike no ordinary minute makes.
    eng = engine(rule("volume_anomaly"))
    signals = feed(eng, minutes("AAPL", ALTERNATING + [burst, 100]))
    assert len(signals) == alerts
    assert all(s.severity == "critical" and s.observed["volume"] == burst for s in signals)


def test_nothing_is_compared_before_the_baseline_is_full():
    # 29 baseline minutes, then a huge minute: warm-up, no alert.
    assert feed(volume(), minutes("AAPL", ALTERNATING[:29] + [100_000, 100])) == []
    # With a baseline of 10 buckets the same tape alerts at minute 10.
    [signal] = feed(volume(baseline_buckets=10), minutes("AAPL", ALTERNATING[:10] + [100_000, 100]))
    assert signal.observed["bucket_start"] == "2024-01-02T14:10:00.000000Z"


@pytest.mark.parametrize(("burst", "alerts"), [(1300, 0), (1301, 1)])
def test_a_flat_baseline_uses_epsilon_times_its_mean_as_the_spread(burst, alerts):
    # sigma is 0; the scale is 0.1 * 1000 = 100, so the limit is 1000 + 3 * 100.
    signals = feed(volume(), minutes("AAPL", [1000] * 30 + [burst, 1000]))
    assert len(signals) == alerts
    if alerts:
        assert (signals[0].observed["spread"], signals[0].observed["scale"]) == (0.0, 100.0)


def test_the_mad_method_is_not_blinded_by_an_outlier_in_the_baseline():
    tape = [95, 105] * 13 + [100, 100, 100, 20_000] + [1_000, 100]
    assert feed(volume(), minutes("AAPL", tape)) == []  # the outlier inflates sigma to 3,572
    [signal] = feed(volume(method="mad"), minutes("AAPL", tape))
    # median 100, MAD 5, scaled 7.413; the floor 0.1 * 100 = 10 is larger.
    assert (signal.observed["centre"], signal.observed["scale"], signal.observed["method"]) == (100.0, 10.0, "mad")
    assert signal.severity == "critical"  # z = 90
    assert "above the median of its last 30 traded minutes" in signal.message


@pytest.mark.parametrize(("burst", "alerts"), [(322, 0), (323, 1)])
def test_the_mad_is_scaled_by_1_4826(burst, alerts):
    # median 100, every deviation 50: scale 1.4826 * 50 = 74.13, limit 100 + 3 * 74.13 = 322.39
    signals = feed(volume(method="mad"), minutes("AAPL", [50, 150] * 15 + [burst, 100]))
    assert len(signals) == alerts
    if alerts:
        assert signals[0].observed["spread"] == pytest.approx(74.13)


def test_empty_minutes_are_skipped_not_counted_as_zero():
    # 30 traded minutes spread over an hour fill the baseline; a normal minute after a
    # two-hour silence is not an anomaly, a burst is.
    traded = {2 * m: v for m, v in enumerate(ALTERNATING)}
    eng = volume()
    assert feed(eng, minutes("AAPL", traded) + minutes("AAPL", {180 + m: 100 for m in range(30)})) == []
    [signal] = feed(eng, minutes("AAPL", {240: 500, 242: 100}))
    assert signal.observed["bucket_start"] == "2024-01-02T18:00:00.000000Z"


def test_advance_completes_a_quiet_symbols_minute_after_the_grace():
    eng = volume()
    feed(eng, minutes("AAPL", ALTERNATING + [500]))
    assert eng.advance(at(31 * 60 + 9.999999)) == []  # grace_seconds is 10
    [signal] = eng.advance(at(31 * 60 + 10))
    assert signal.ts == at(31 * 60)
    assert eng.advance(at(40 * 60)) == []
    # The bucket is complete now: a trade for it is dropped and counted.
    assert eng.on_trades([trade("AAPL", 30 * 60 + 59, "100.00", "1")]) == []
    assert eng.counters().late_volume_dropped == 1


TWO_DAYS = 2 * 86_400


def replay_beside_live(eng, replayed: list, *, behind: float, until: float) -> list:
    """A file replayed at its own pace, ``behind`` seconds of event time behind a live symbol that
    trades every second and started first; after each second's batch the market's event time is
    the live one."""
    pending = sorted(replayed, key=lambda t: t.ts)
    start = int(pending[0].ts.timestamp() - at(0).timestamp() + behind)
    signals = eng.on_trades([trade("LIVE", start - 1, "50.00", "1")]) + eng.advance(at(start - 1))
    for second in range(start, int(until)):
        due = [t for t in pending if t.ts < at(second + 1 - behind)]
        pending = pending[len(due):]
        signals += eng.on_trades([trade("LIVE", second, "50.00", "1"), *due])
        signals += eng.advance(at(second))
    return signals


def test_a_file_replayed_beside_the_live_feed_has_its_minutes_completed_on_its_own_clock():
    eng = volume()
    # Ten trades a minute, six seconds apart: 100 a minute, then a minute of ten times that.
    replayed = [trade("OLD", m * 60 + 6 * i + 1, "100.00", "100" if m == 30 else "10", seq=m * 10 + i)
                for m in range(32) for i in range(10)]
    signals = [s for s in replay_beside_live(eng, replayed, behind=TWO_DAYS, until=TWO_DAYS + 40 * 60)
               if s.symbol == "OLD"]
    [burst] = signals
    assert burst.ts == at(31 * 60)
    assert (burst.observed["volume"], burst.observed["centre"]) == (1000.0, 100.0)  # whole minutes
    assert eng.counters().late_volume_dropped == 0


def test_a_new_engine_told_where_the_market_is_judges_a_replayed_minute_whole():
    eng = volume()
    eng.market_time_known(at(TWO_DAYS))  # a restart: where the run before had got to
    for i in range(10):
        assert eng.on_trades([trade("OLD", 6 * i + 1, "100.00", "10")]) == []
        assert eng.advance(at(TWO_DAYS + 6 * i + 1)) == []
    assert eng.counters().late_volume_dropped == 0


def test_a_replayed_symbols_last_minute_completes_a_grace_after_its_own_clock_passes_it():
    eng = volume()
    replayed = [trade("OLD", m * 60 + 6 * i + 1, "100.00", "100" if m == 30 else "10", seq=m * 10 + i)
                for m in range(31) for i in range(10)]  # the file ends with the burst
    # The market's time is a batch (here a second) old when a trade is read: its lag is known to that.
    assert replay_beside_live(eng, replayed, behind=TWO_DAYS, until=TWO_DAYS + 31 * 60 + 8) == []
    [burst] = eng.advance(at(TWO_DAYS + 31 * 60 + 10))  # the live market, grace_seconds after the minute
    assert burst.observed["volume"] == 1000.0


def test_the_same_alert_comes_whether_a_trade_or_advance_completes_the_minute():
    by_trade = feed(volume(), minutes("AAPL", ALTERNATING + [500, 100]))
    eng = volume()
    feed(eng, minutes("AAPL", ALTERNATING + [500]))
    by_advance = eng.advance(at(32 * 60))
    assert by_trade == by_advance and len(by_trade) == 1


def test_a_late_trade_counts_while_its_minute_is_open_and_is_dropped_after():
    eng = volume()
    feed(eng, minutes("AAPL", [100] * 30))
    open_minute = [trade("AAPL", 30 * 60 + 30, "100.00", "100"), trade("AAPL", 30 * 60 + 40, "100.00", "100"),
                   trade("AAPL", 30 * 60 + 35, "100.00", "50")]  # late, same minute
    assert eng.on_trades(open_minute) == []
    [signal] = eng.on_trades([trade("AAPL", 31 * 60, "100.00", "100"), trade("AAPL", 30 * 60 + 50, "100.00", "7")])
    assert signal.observed["volume"] == 250.0  # the 7 came after the minute completed
    assert eng.counters() == type(eng.counters())(late_trades=2, late_quotes=0, late_volume_dropped=1)


def test_one_alert_per_episode_with_an_escalation_and_a_new_episode_after_cooldown():
    eng = volume()
    tape = [1000] * 30 + [1400, 1500, 2000] + [1000] * 5 + [2000, 1000]
    signals = feed(eng, minutes("AAPL", tape))
    assert [(s.severity, s.ts) for s in signals] == [
        ("medium", at(31 * 60)),  # z = 4
        ("high", at(33 * 60)),  # z = 8.6: an escalation of the same episode, minute 31 was medium again
        ("medium", at(39 * 60)),  # 39 - 33 >= 5 minutes of cooldown: a new episode
    ]
    assert signals[1].id == alert_id("volume-anomaly", "AAPL", at(31 * 60), "high")
    assert signals[2].id == alert_id("volume-anomaly", "AAPL", at(39 * 60))


def test_symbols_have_their_own_baselines():
    eng = volume()
    tape = minutes("AAPL", [100] * 30 + [200, 100]) + minutes("MSFT", [1000] * 30 + [1200, 1000])
    assert [s.symbol for s in feed(eng, tape, batch=len(tape))] == ["AAPL"]


def test_candles_seed_the_baseline_like_the_trades_they_summarise():
    tape = [90 + (m * 7) % 23 for m in range(40)]

    def candle(m: int, v: int) -> Candle:
        price = Decimal("100.00")
        return Candle(symbol="AAPL", interval="1m", start=at(m * 60), open=price, high=price, low=price, close=price,
                      volume=Decimal(v), trades=1, vwap=price, first_trade_ts=at(m * 60 + 30),
                      last_trade_ts=at(m * 60 + 30))

    live = volume()
    feed(live, minutes("AAPL", tape))
    warmed = volume()
    # Candles of minutes 0-34, then trades from minute 33 on: the overlap is dropped, not counted twice.
    warmed.warm(candles=[candle(m, v) for m, v in enumerate(tape[:35])], trades=minutes("AAPL", tape)[33:])
    after = minutes("AAPL", {40: 100, 41: 400, 42: 100})
    assert feed(live, after) == feed(warmed, after) != []
    assert warmed.counters().late_volume_dropped == 2  # minutes 33 and 34 came as candles already


def test_warming_a_symbol_in_a_running_engine_leaves_the_other_symbols_minutes_alone():
    eng = volume()
    assert feed(eng, minutes("AAPL", ALTERNATING + [131])) == []  # minute 30 is still open
    # MSFT is read for the first time, its partition an hour ahead of AAPL's: its history must not
    # complete AAPL's minute unseen.
    eng.warm(trades=minutes("MSFT", {m: 100 for m in range(60, 95)}))
    [signal] = eng.advance(at(32 * 60))
    assert (signal.symbol, signal.ts) == ("AAPL", at(31 * 60))


# The definition the slow way: statistics module, no deques.
def reference(volumes: dict[int, int], n: int, method: str, k: float, cooldown: int) -> list[tuple[str, str]]:
    out, start, last_true, level = [], None, -math.inf, -1
    order = sorted(volumes)
    for i, m in enumerate(order[:-1]):  # the last minute stays open
        base = [volumes[x] for x in order[max(0, i - n) : i]]
        if len(base) < n:
            continue
        if method == "mean":
            centre, spread = statistics.fmean(base), statistics.pstdev(base)
        else:
            centre = statistics.median(base)
            spread = 1.4826 * statistics.median(abs(v - centre) for v in base)
        scale = max(spread, 0.1 * centre)
        if not volumes[m] > centre + k * scale:
            continue
        z = (volumes[m] - centre) / scale
        lv, sev = (3, "critical") if z > 10 else (2, "high") if z > 6 else (1, "medium")
        end = (m + 1) * 60
        if start is None or end - last_true >= cooldown:
            start, last_true, level = at(end), end, lv
            out.append((alert_id("volume-anomaly", "AAPL", start), sev))
        else:
            last_true = end
            if lv > level:
                level = lv
                out.append((alert_id("volume-anomaly", "AAPL", start, sev), sev))
    return out


@settings(max_examples=150, deadline=None)
@given(
    volumes=st.lists(st.one_of(st.integers(80, 120), st.integers(1, 5_000), st.none()), min_size=2, max_size=70),
    n=st.sampled_from([3, 10, 30]),
    method=st.sampled_from(["mean", "mad"]),
    k=st.sampled_from([2.0, 3.0]),
    cooldown=st.sampled_from([0, 120, 300]),
)
def test_signals_match_the_definition_computed_the_slow_way(volumes, n, method, k, cooldown):
    traded = {m: v for m, v in enumerate(volumes) if v is not None}
    tape = []
    for m, v in traded.items():  # each minute in two trades (one when the volume is 1)
        tape += [trade("AAPL", m * 60 + 1, "100.00", str(v - v // 2))]
        tape += [trade("AAPL", m * 60 + 59.5, "100.00", str(v // 2))] if v > 1 else []
    eng = volume(cooldown=cooldown, baseline_buckets=n, method=method, k_sigma=k)
    got = [(s.id, s.severity) for s in feed(eng, tape, batch=5)]
    assert got == reference(traded, n, method, k, cooldown)
