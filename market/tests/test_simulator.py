"""The simulator: deterministic, realistic on average, and its injected anomalies are real and recorded.

Statistics are checked over long seeded runs in virtual time (no sleeping):
a few hundred thousand events each, generated once per module.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.domain.candles import decimal_text
from market.domain.simulator import (
    DEFAULT_PROFILES,
    DEFAULT_SYMBOLS,
    TRADING_YEAR_SECONDS,
    InjectedAnomaly,
    MarketSimulator,
    SymbolProfile,
    ground_truth_from_json,
    ground_truth_json,
    intraday_volume_factor,
    profile_for,
)
from streaming.schemas import Quote, Trade, decoder_for, encode

START = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)  # 90 minutes before the US open
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CENT = Decimal("0.01")


def run_for(sim: MarketSimulator, duration: timedelta) -> list[Trade | Quote]:
    """The events of the first ``duration`` of event time."""
    end = sim.start + duration
    events = []
    for event in sim.events():
        if event.ts >= end:
            return events
        events.append(event)
    raise AssertionError("unreachable: the stream is infinite")


def seconds(ts: datetime) -> float:
    return (ts - START).total_seconds()


def largest_move_within(points: list[tuple[float, float]], window: float) -> tuple[float, float]:
    """The largest max/min - 1 of prices within any ``window`` seconds, and the time it was reached."""
    lows: deque[tuple[float, float]] = deque()
    highs: deque[tuple[float, float]] = deque()
    worst, worst_t = 0.0, math.nan
    for t, price in points:
        while lows and lows[-1][1] >= price:
            lows.pop()
        lows.append((t, price))
        while highs and highs[-1][1] <= price:
            highs.pop()
        highs.append((t, price))
        while lows[0][0] < t - window:
            lows.popleft()
        while highs[0][0] < t - window:
            highs.popleft()
        move = highs[0][1] / lows[0][1] - 1.0
        if move > worst:
            worst, worst_t = move, t
    return worst, worst_t


def trade_points(events, symbol: str) -> list[tuple[float, float]]:
    return [(seconds(e.ts), float(e.price)) for e in events if isinstance(e, Trade) and e.symbol == symbol]


@pytest.fixture(scope="module")
def plain_run() -> list[Trade | Quote]:
    """Three hours of the ten default symbols at 10 trades/s across the US open, no anomalies."""
    sim = MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=11, start=START, rate=10.0)
    events = run_for(sim, timedelta(hours=3))
    assert sim.ground_truth == []
    return events


@pytest.fixture(scope="module")
def anomaly_run() -> tuple[MarketSimulator, list[Trade | Quote]]:
    """Four and a half hours of three symbols with anomalies as often as the spacing allows."""
    sim = MarketSimulator(symbols=("AAPL", "TSLA", "JNJ"), seed=7, start=START, rate=10.0, anomaly_rate=1.0)
    return sim, run_for(sim, timedelta(hours=4, minutes=30))


# Determinism


def test_same_seed_gives_same_stream_ids_and_ground_truth():
    def make() -> MarketSimulator:
        return MarketSimulator(symbols=("AAPL", "TSLA"), seed=42, start=START, rate=0.5, anomaly_rate=1.0)

    first, second = make(), make()
    a = run_for(first, timedelta(hours=4))
    b = run_for(second, timedelta(hours=4))
    assert len(a) > 10_000 and a == b
    assert first.ground_truth and first.ground_truth == second.ground_truth


def test_different_seeds_give_different_streams_and_ids():
    a = MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=1, start=START, rate=50.0).next_batch(2000)
    b = MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=2, start=START, rate=50.0).next_batch(2000)
    assert [e.ts for e in a] != [e.ts for e in b]
    assert not {e.id for e in a} & {e.id for e in b}


def test_runs_from_another_start_have_ids_of_their_own():
    # The store keeps a trade once per (symbol, time, id), and clients tell repeats by id: a second
    # run of the seed a microsecond later is other trades, under other ids.
    a = MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=1, start=START, rate=50.0).next_batch(2000)
    b = MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=1, start=START + timedelta(microseconds=1),
                        rate=50.0).next_batch(2000)
    assert not {e.id for e in a} & {e.id for e in b}


def test_events_and_next_batch_continue_one_stream():
    def make() -> MarketSimulator:
        return MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=3, start=START, rate=100.0)

    batched = make()
    parts = batched.next_batch(700) + batched.next_batch(300) + list(islice(batched.events(), 500))
    assert parts == make().next_batch(1500)


# The contract and the book


def test_every_event_is_a_valid_contract_message(plain_run):
    for event in plain_run[::97]:
        assert decoder_for(type(event)).decode(encode(event)) == event
        assert event.ts.tzinfo is UTC and len(event.id) <= 64
    assert {type(e) for e in plain_run} == {Trade, Quote}


def test_event_times_never_go_backwards(plain_run):
    times = [e.ts for e in plain_run]
    assert times[0] == START
    assert all(a <= b for a, b in zip(times, times[1:]))


RUN = "hekghynls0"  # START in epoch microseconds, base 36


def test_ids_are_unique_and_seq_counts_each_symbols_trades_from_one(plain_run):
    assert len({e.id for e in plain_run}) == len(plain_run)
    seqs = defaultdict(list)
    for e in plain_run:
        if isinstance(e, Trade):
            seqs[e.symbol].append(e.seq)
            assert e.id == f"sim-11-{RUN}-{e.symbol}-{e.seq}"
        else:
            assert e.id.startswith(f"simq-11-{RUN}-{e.symbol}-")
    assert set(seqs) == set(DEFAULT_SYMBOLS)
    for symbol_seqs in seqs.values():
        assert symbol_seqs == list(range(1, len(symbol_seqs) + 1))


def test_prices_are_positive_and_on_the_cent_tick(plain_run):
    for e in plain_run:
        prices = (e.price,) if isinstance(e, Trade) else (e.bid, e.ask)
        for price in prices:
            assert price > 0 and price == price.quantize(CENT) and f"{price:f}" == decimal_text(price)


def test_quotes_have_bid_below_ask_and_round_lot_sizes(plain_run):
    spreads = defaultdict(list)
    for e in plain_run:
        if isinstance(e, Quote):
            assert e.bid < e.ask
            assert e.bid_size > 0 and e.bid_size % 100 == 0 and e.ask_size % 100 == 0
            spreads[e.symbol].append(e.ask - e.bid)
    # Spreads grow with price x volatility: META's is wider than AAPL's and JNJ's.
    mean = {s: statistics.mean(v) for s, v in spreads.items()}
    assert mean["META"] > 2 * mean["AAPL"] and mean["TSLA"] > mean["JNJ"]
    assert Decimal("0.01") <= min(mean.values()) and max(mean.values()) < Decimal("0.10")


def test_trades_happen_at_or_inside_the_current_quote(plain_run):
    book: dict[str, Quote] = {}
    inside = 0
    for e in plain_run:
        if isinstance(e, Quote):
            book[e.symbol] = e
            continue
        quote = book[e.symbol]  # every symbol is quoted before it trades
        assert quote.bid <= e.price <= quote.ask
        if quote.bid < e.price < quote.ask:
            inside += 1
        else:
            assert e.price == (quote.ask if e.side == "buy" else quote.bid)
    trades = sum(isinstance(e, Trade) for e in plain_run)
    assert 0 < inside < 0.1 * trades


# Rates, shares and sizes


def test_the_mean_trade_rate_is_the_rate_asked_for(plain_run):
    trades = sum(isinstance(e, Trade) for e in plain_run)
    assert trades / (3 * 3600) == pytest.approx(10.0, rel=0.02)


def test_quotes_per_trade_is_honoured():
    sim = MarketSimulator(symbols=("AAPL", "MSFT"), seed=5, start=START, rate=20.0, quotes_per_trade=3.0)
    events = sim.next_batch(80_002)[2:]  # after the opening quotes
    trades = sum(isinstance(e, Trade) for e in events)
    assert (len(events) - trades) / trades == pytest.approx(3.0, rel=0.03)


def test_symbols_trade_in_proportion_to_their_volume_weight(plain_run):
    counts = defaultdict(int)
    for e in plain_run:
        if isinstance(e, Trade):
            counts[e.symbol] += 1
    total_weight = sum(DEFAULT_PROFILES[s].volume_weight for s in DEFAULT_SYMBOLS)
    total = sum(counts.values())
    for symbol in DEFAULT_SYMBOLS:
        share = DEFAULT_PROFILES[symbol].volume_weight / total_weight
        assert counts[symbol] / total == pytest.approx(share, rel=0.06)


def test_trade_sizes_are_heavy_tailed_mostly_round_lots(plain_run):
    sizes = [int(e.size) for e in plain_run if isinstance(e, Trade)]
    assert all(Decimal(s) == s and s >= 1 for s in sizes)
    round_lots = sum(s % 100 == 0 for s in sizes) / len(sizes)
    odd_lots = sum(s < 100 for s in sizes) / len(sizes)
    assert 0.6 < round_lots < 0.85 and 0.1 < odd_lots < 0.35
    assert statistics.median(sizes) <= 300 < statistics.mean(sizes)
    blocks = [s for s in sizes if s >= 10_000]
    assert 20 <= len(blocks) < 0.003 * len(sizes) and max(sizes) >= 20_000


def test_intraday_volume_factor_is_a_smooth_u_over_the_us_session():
    by_minute = [intraday_volume_factor(m * 60.0) for m in range(1440)]
    session = by_minute[14 * 60 + 30 : 21 * 60]
    assert statistics.mean(session) == pytest.approx(1.0, abs=0.02)
    open_, midday, close = by_minute[14 * 60 + 30], by_minute[17 * 60 + 45], by_minute[21 * 60]
    assert open_ > 1.8 and midday < 0.9 and close > 1.4 and open_ > close
    assert max(by_minute[: 12 * 60]) < 0.4  # quiet night
    # Smooth: no jump from one minute to the next that a volume detector would mistake for a burst.
    assert max(abs(a - b) for a, b in zip(by_minute, by_minute[1:] + by_minute[:1])) < 0.05


def test_trades_are_bigger_at_the_open_than_at_midday():
    def mean_size(start: datetime) -> float:
        sim = MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=9, start=start, rate=10.0)
        sizes = [min(int(e.size), 10_000) for e in run_for(sim, timedelta(minutes=30)) if isinstance(e, Trade)]
        return statistics.mean(sizes)

    assert mean_size(datetime(2026, 1, 5, 14, 30, tzinfo=UTC)) > 1.4 * mean_size(
        datetime(2026, 1, 5, 17, 30, tzinfo=UTC)
    )


# Prices


def test_realised_volatility_and_drift_match_the_profiles():
    drifty = SymbolProfile("DRIFT", Decimal("100.00"), 0.20, 10.0, 1.0)
    profiles = [drifty, dataclasses.replace(DEFAULT_PROFILES["TSLA"], volume_weight=1.0),
                dataclasses.replace(DEFAULT_PROFILES["JNJ"], volume_weight=1.0)]  # fmt: skip
    sim = MarketSimulator(symbols=profiles, seed=21, start=START, rate=0.2)
    days = 5
    step = 300.0  # sample the last trade price every 5 minutes of event time
    last_price: dict[str, float] = {}
    samples: dict[str, list[float]] = defaultdict(list)
    next_sample = step
    for e in sim.events():
        t = seconds(e.ts)
        while t >= next_sample:
            for symbol, price in last_price.items():
                samples[symbol].append(price)
            next_sample += step
        if next_sample > days * 86400:
            break
        if isinstance(e, Trade):
            last_price[e.symbol] = float(e.price)

    years_per_step = step / TRADING_YEAR_SECONDS
    for profile in profiles:
        returns = [math.log(b / a) for a, b in zip(samples[profile.symbol], samples[profile.symbol][1:])]
        assert len(returns) > 1400
        realised = statistics.stdev(returns) / math.sqrt(years_per_step)
        assert realised == pytest.approx(profile.volatility, rel=0.1), profile.symbol
        if profile is drifty:
            # Log returns drift at drift - vol^2/2; 4 standard errors of tolerance.
            span = len(returns) * years_per_step
            drift = sum(returns) / span
            assert abs(drift - (profile.drift - profile.volatility**2 / 2)) < 4 * profile.volatility / math.sqrt(span)


def test_without_anomalies_no_price_moves_5_percent_within_a_minute(plain_run):
    for symbol in DEFAULT_SYMBOLS:
        move, _ = largest_move_within(trade_points(plain_run, symbol), 60.0)
        # Even TSLA, the most volatile, stays far from 5 %.
        assert move < 0.02, symbol


def test_prices_start_at_the_profile_price(plain_run):
    first_quotes = plain_run[: len(DEFAULT_SYMBOLS)]
    for quote in first_quotes:
        assert isinstance(quote, Quote) and quote.ts == START
        mid = (quote.bid + quote.ask) / 2
        assert abs(mid - DEFAULT_PROFILES[quote.symbol].price) <= Decimal("0.02")


# Anomalies


def test_injected_anomalies_are_recorded_for_both_kinds_after_the_warm_up(anomaly_run):
    sim, _ = anomaly_run
    kinds = {a.kind for a in sim.ground_truth}
    assert kinds == {"price_spike", "volume_burst"} and len(sim.ground_truth) >= 6
    by_symbol = defaultdict(list)
    for a in sim.ground_truth:
        assert a.start >= START + (timedelta(minutes=5) if a.kind == "price_spike" else timedelta(hours=1))
        by_symbol[a.symbol].append(a)
    for episodes in by_symbol.values():
        for before, after in zip(episodes, episodes[1:]):
            assert after.start - before.end >= timedelta(hours=1)


def test_injected_price_spikes_move_more_than_5_percent_within_a_minute(anomaly_run):
    sim, events = anomaly_run
    spikes = [a for a in sim.ground_truth if a.kind == "price_spike"]
    assert len(spikes) >= 3
    for spike in spikes:
        assert spike.end - spike.start < timedelta(seconds=60) and 0.06 <= abs(spike.magnitude) <= 0.15
        points = trade_points(events, spike.symbol)
        t0, t1 = seconds(spike.start), seconds(spike.end)
        before = [p for t, p in points if t < t0][-1]
        after = [p for t, p in points if t1 <= t < t1 + 5][-1]
        move = after / before - 1
        assert abs(move) > 0.05 and math.copysign(1, move) == math.copysign(1, spike.magnitude)
        assert move == pytest.approx(spike.magnitude, abs=0.01)
        # Within one minute of trades.
        window = [(t, p) for t, p in points if t0 - 30 <= t <= t1 + 30]
        assert largest_move_within(window, 60.0)[0] > 0.05


def test_every_5_percent_move_within_a_minute_is_an_injected_spike(anomaly_run):
    sim, events = anomaly_run
    for symbol in ("AAPL", "TSLA", "JNJ"):
        spikes = [a for a in sim.ground_truth if a.symbol == symbol and a.kind == "price_spike"]
        points = trade_points(events, symbol)
        # Cut the series around each spike; what is left must be quiet.
        quiet, spans = [], [(seconds(a.start) - 60, seconds(a.end) + 60) for a in spikes]
        for t, p in points:
            if any(lo <= t <= hi for lo, hi in spans):
                if quiet:
                    assert largest_move_within(quiet, 60.0)[0] < 0.05, symbol
                quiet = []
            else:
                quiet.append((t, p))
        assert largest_move_within(quiet, 60.0)[0] < 0.05, symbol


def test_spreads_widen_during_a_price_spike(anomaly_run):
    sim, events = anomaly_run
    for spike in (a for a in sim.ground_truth if a.kind == "price_spike"):
        quotes = [e for e in events if isinstance(e, Quote) and e.symbol == spike.symbol]
        during = [q.ask - q.bid for q in quotes if spike.start < q.ts <= spike.end]
        before = [q.ask - q.bid for q in quotes if spike.start - timedelta(minutes=10) < q.ts <= spike.start]
        assert statistics.mean(during) >= 3 * statistics.mean(before)


def test_volume_bursts_fill_whole_minutes_and_fire_a_3_sigma_detector(anomaly_run):
    sim, events = anomaly_run
    run_end = events[-1].ts
    bursts = [a for a in sim.ground_truth if a.kind == "volume_burst" and a.end <= run_end]
    assert len(bursts) >= 2
    for burst in bursts:
        assert burst.start.second == burst.start.microsecond == 0
        assert burst.end - burst.start in {timedelta(minutes=m) for m in (1, 2, 3)}
        assert 15 <= burst.magnitude <= 25
        volume: dict[datetime, float] = defaultdict(float)
        for e in events:
            if isinstance(e, Trade) and e.symbol == burst.symbol:
                volume[e.ts.replace(second=0, microsecond=0)] += float(e.size)
        # Normal: the median minute of the last half hour (a mean would follow the odd block trade).
        normal = statistics.median(volume[burst.start - timedelta(minutes=k)] for k in range(1, 31))
        minute = burst.start
        while minute < burst.end:
            assert volume[minute] >= 8 * normal
            minute += timedelta(minutes=1)
        for lookback in (30, 60):
            history = [volume[burst.start - timedelta(minutes=k)] for k in range(1, lookback + 1)]
            threshold = statistics.mean(history) + 3 * statistics.pstdev(history)
            assert volume[burst.start] > threshold, (burst, lookback)


def test_ground_truth_grows_as_events_are_generated():
    sim = MarketSimulator(symbols=("AAPL", "JNJ"), seed=8, start=START, rate=1.0, anomaly_rate=1.0)
    run_for(sim, timedelta(minutes=4, seconds=59))
    assert sim.ground_truth == []  # the spikes' warm-up
    last = run_for(sim, timedelta(hours=4))[-1]
    assert sim.ground_truth and all(a.start <= last.ts for a in sim.ground_truth)


def test_the_anomaly_rate_is_per_symbol_per_hour():
    symbols = ("AAPL", "MSFT", "AMZN", "JPM", "V")
    sim = MarketSimulator(symbols=symbols, seed=13, start=START, rate=0.5, anomaly_rate=0.25)
    hours = 60
    run_for(sim, timedelta(hours=hours))
    assert len(sim.ground_truth) == pytest.approx(0.25 * hours * len(symbols), rel=0.25)


def test_ground_truth_round_trips_through_json(anomaly_run):
    sim, _ = anomaly_run
    text = ground_truth_json(sim.ground_truth)
    assert ground_truth_from_json(text) == sim.ground_truth
    assert '"kind": "price_spike"' in text and "+00:00" in text
    assert sim.ground_truth[0].to_json()["start"] == sim.ground_truth[0].start.isoformat()
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        InjectedAnomaly.from_json({"symbol": "X", "kind": "meteor", "start": "", "end": "", "magnitude": 1})


# Profiles and arguments


def test_default_profiles_cover_the_default_symbols_with_realistic_numbers():
    assert set(DEFAULT_PROFILES) == set(DEFAULT_SYMBOLS)
    assert DEFAULT_PROFILES["AAPL"].price == Decimal("230.00") and DEFAULT_PROFILES["META"].price == 580
    vol = {s: p.volatility for s, p in DEFAULT_PROFILES.items()}
    assert min(vol["TSLA"], vol["NVDA"]) > max(vol[s] for s in ("AAPL", "MSFT", "JPM", "V", "JNJ"))
    assert max(vol["JNJ"], vol["V"]) < min(vol[s] for s in ("AAPL", "GOOGL", "MSFT", "AMZN", "META"))


def test_an_unknown_symbol_gets_a_plausible_profile_derived_from_its_name():
    profile = profile_for("XYZ")
    assert profile == profile_for("XYZ") != profile_for("ABC")
    assert Decimal(10) <= profile.price <= Decimal(500) and profile.price == profile.price.quantize(CENT)
    assert 0.2 <= profile.volatility <= 0.5
    assert profile_for("AAPL") is DEFAULT_PROFILES["AAPL"]
    with pytest.raises(ValueError, match="not a valid symbol"):
        profile_for("btc/usd")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"start": datetime(2026, 1, 5)}, "timezone-aware"),
        ({"rate": 0.0}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"anomaly_rate": -1.0}, "anomaly_rate"),
        ({"quotes_per_trade": 0.0}, "quotes_per_trade"),
        ({"symbols": ()}, "empty"),
        ({"symbols": ("AAPL", "AAPL")}, "distinct"),
        ({"seed": 10**40}, "too long"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(changes, message):
    arguments = {"symbols": DEFAULT_SYMBOLS, "seed": 1, "start": START, "rate": 10.0, **changes}
    with pytest.raises(ValueError, match=message):
        MarketSimulator(**arguments)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**63),
    rate=st.floats(min_value=0.1, max_value=5000.0),
    quotes_per_trade=st.floats(min_value=0.05, max_value=10.0),
    symbols=st.lists(st.sampled_from(DEFAULT_SYMBOLS + ("XYZ", "BRK.B", "BTC-USD")), min_size=1, unique=True),
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
)
def test_the_invariants_hold_for_any_seed_rate_and_symbols(seed, rate, quotes_per_trade, symbols, start):
    sim = MarketSimulator(symbols=symbols, seed=seed, start=start, rate=rate, quotes_per_trade=quotes_per_trade)
    events = sim.next_batch(2000)
    book: dict[str, Quote] = {}
    seqs: dict[str, int] = defaultdict(int)
    previous = start
    for e in events:
        assert previous <= e.ts
        previous = e.ts
        if isinstance(e, Quote):
            assert 0 < e.bid < e.ask
            book[e.symbol] = e
        else:
            assert book[e.symbol].bid <= e.price <= book[e.symbol].ask and e.size >= 1
            seqs[e.symbol] += 1
            assert e.seq == seqs[e.symbol]
    assert len({e.id for e in events}) == len(events)


# The two forms of the stream


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**63),
    rate=st.floats(min_value=0.1, max_value=5000.0),
    anomaly_rate=st.sampled_from([0.0, 1.0]),
    symbols=st.lists(st.sampled_from(DEFAULT_SYMBOLS + ("XYZ", "BRK.B", "BTC-USD")), min_size=1, unique=True),
    start=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
)
def test_wire_messages_are_the_encoded_events_of_the_same_seed(seed, rate, anomaly_rate, symbols, start):
    def make() -> MarketSimulator:
        return MarketSimulator(symbols=symbols, seed=seed, start=start, rate=rate, anomaly_rate=anomaly_rate)

    events = make().next_batch(3000)
    messages = list(islice(make().wire_messages(trades_topic="t", quotes_topic="q"), 3000))
    assert messages == [
        ("t" if isinstance(e, Trade) else "q", e.symbol, encode(e), (e.ts - EPOCH) // timedelta(milliseconds=1))
        for e in events
    ]


def test_wire_messages_end_before_until_and_match_the_events_up_to_it():
    def make() -> MarketSimulator:
        return MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=6, start=START, rate=100.0, anomaly_rate=1.0)

    until = START + timedelta(hours=2)  # past the first anomalies, which change the arrivals
    messages = list(make().wire_messages(trades_topic="t", quotes_topic="q", until=until))
    events = run_for(make(), until - START)
    assert [m[2] for m in messages] == [encode(e) for e in events]
    assert decoder_for(Trade).decode(next(m[2] for m in reversed(messages) if m[0] == "t")).ts < until


def test_wire_messages_until_the_start_are_none():
    sim = MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=1, start=START, rate=10.0)
    assert list(sim.wire_messages(trades_topic="t", quotes_topic="q", until=START)) == []


def test_a_simulator_streams_one_form_only():
    sim = MarketSimulator(symbols=DEFAULT_SYMBOLS, seed=1, start=START, rate=10.0)
    sim.next_batch(10)
    with pytest.raises(RuntimeError, match="already streams structs"):
        sim.wire_messages(trades_topic="t", quotes_topic="q")
