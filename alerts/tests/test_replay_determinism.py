"""The same events give the same alerts, whatever the batching, and after a restart with warm()."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.domain.detectors import DEFAULT_RULES, AnomalyEngine
from alerts.domain.signals import EpisodeSeed

from .factories import at, consumer_order, engine, quote, rule, trade


def market_tape() -> list:
    """45 minutes of three symbols, two trades a second in all, in event-time order, with an
    AAPL jump at 600 s, an MSFT volume burst in minute 40 and TSLA silent from 1200 s to 1500 s."""
    rng = random.Random(42)
    prices = {"AAPL": 10_000, "MSFT": 30_000, "TSLA": 20_000}
    seqs = dict.fromkeys(prices, 0)
    tape = []
    for step in range(45 * 60 * 2):
        seconds = step / 2
        symbol = ("AAPL", "MSFT", "TSLA")[step % 3]
        if symbol == "TSLA" and 1200 <= seconds < 1500:
            symbol = "AAPL"
        prices[symbol] += rng.randint(-3, 3)
        if symbol == "AAPL" and seconds == 600:
            prices[symbol] = prices[symbol] * 107 // 100
        size = rng.randint(1, 20) * (40 if symbol == "MSFT" and 2400 <= seconds < 2460 else 1)
        seqs[symbol] += 1
        tape.append(trade(symbol, seconds + rng.random() / 4, Decimal(prices[symbol]).scaleb(-2), size, seqs[symbol]))
    return tape


TAPE = market_tape()


def run(tape, sizes) -> list:
    """Feed like the consumer: batches of the given sizes (cycled), each grouped by symbol and
    sorted, then advance() to the batch's latest event time."""
    engine = AnomalyEngine(DEFAULT_RULES)
    signals, i, k = [], 0, 0
    while i < len(tape):
        batch = consumer_order(tape[i : i + sizes[k % len(sizes)]])
        i, k = i + len(batch), k + 1
        signals += engine.on_trades(batch)
        signals += engine.advance(max(t.ts for t in batch))
    return signals


REFERENCE = run(TAPE, [1])


def by_id(signals) -> list:
    return sorted(signals, key=lambda s: s.id)


def test_the_tape_raises_one_alert_of_each_trade_rule():
    assert sorted((s.type, s.symbol) for s in REFERENCE) == [
        ("price_spike", "AAPL"), ("stale_feed", "TSLA"), ("volume_anomaly", "MSFT"),
    ]


def test_two_engines_fed_the_same_input_raise_identical_alerts():
    assert run(TAPE, [100]) == run(TAPE, [100])


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 200), min_size=1, max_size=8))
def test_batching_does_not_change_the_alerts(sizes):
    # Holds while batches span less than the stale gap (120 s, i.e. 240 trades here) of event time.
    assert by_id(run(TAPE, sizes)) == by_id(REFERENCE)


def test_warm_raises_nothing_and_a_restarted_engine_continues_like_the_live_one():
    crash = 1260 * 2  # at 1260 s: TSLA is silent but not stale yet, MSFT's burst is to come
    live = AnomalyEngine(DEFAULT_RULES)
    live_after = []
    for i in range(0, len(TAPE), 100):
        batch = consumer_order(TAPE[i : i + 100])
        signals = live.on_trades(batch) + live.advance(max(t.ts for t in batch))
        if i >= crash:
            live_after += signals
    restarted = AnomalyEngine(DEFAULT_RULES)
    assert restarted.warm(trades=TAPE[:crash]) == []
    restarted_after = []
    for i in range(crash, len(TAPE), 100):
        batch = consumer_order(TAPE[i : i + 100])
        restarted_after += restarted.on_trades(batch) + restarted.advance(max(t.ts for t in batch))
    assert restarted_after == live_after
    assert {s.type for s in live_after} == {"volume_anomaly", "stale_feed"}


def test_an_episode_open_at_the_crash_is_not_raised_again_after_warm():
    crash = 630 * 2  # 30 s into the AAPL spike episode
    live = AnomalyEngine(DEFAULT_RULES)
    assert [s.type for s in live.on_trades(TAPE[:crash])] == ["price_spike"]
    restarted = AnomalyEngine(DEFAULT_RULES)
    restarted.warm(trades=TAPE[:crash])
    assert [s.type for s in restarted.on_trades(TAPE[crash : crash + 200])] == []
    assert [s.type for s in live.on_trades(TAPE[crash : crash + 200])] == []


def test_a_new_or_changed_rule_announces_the_episode_it_finds_open_in_the_warm_up():
    # The engine is rebuilt 30 s into the AAPL spike episode after the price rule changed: no run
    # alerted the episode under this rule, so the warm-up returns what the live engine raised for it,
    # and the episode goes on without another alert.
    crash = 630 * 2
    live = AnomalyEngine(DEFAULT_RULES)
    raised = [s for s in live.on_trades(TAPE[:crash]) if s.type == "price_spike"]
    rebuilt = AnomalyEngine(DEFAULT_RULES)
    assert rebuilt.warm(trades=TAPE[:crash], announce=lambda rule, symbol: rule == "price-spike") == raised
    assert [s.type for s in rebuilt.on_trades(TAPE[crash : crash + 200])] == []


@pytest.mark.parametrize(("history_end", "alerted_at", "announced"), [
    (659, None, 1),  # the condition held at 501 s, 158 s before the history's end: within the cooldown
    (859, None, 0),  # 358 s before it: the episode is over, nothing to announce
    (659, 501, 0),  # a stored alert tells the episode: it was alerted
    # A stored alert of an earlier start, and the history's episode begins after it: whether the
    # condition held in between, the history does not tell (the consumer asks to announce only
    # where the engine before had no episode open: test_anomaly_pipeline).
    (659, 400, 1),
])
def test_only_an_episode_still_open_and_never_alerted_is_announced(history_end, alerted_at, announced):
    eng = engine(rule("price_spike", cooldown_seconds=300))
    history = [trade("T", 500, "100"), trade("T", 501, "106")] + [trade("T", s, "106") for s in range(600, history_end)]
    seeds = [] if alerted_at is None else [_price_spike_seed(alerted_at, alerted_at)]
    assert len(eng.warm(trades=history, episodes=seeds, announce=lambda rule, symbol: True)) == announced


@pytest.mark.parametrize("announce", [None, lambda rule, symbol: symbol != "T"])
def test_an_episode_not_announced_raises_nothing(announce):
    eng = engine(rule("price_spike", cooldown_seconds=300))
    history = [trade("T", 500, "100"), trade("T", 501, "106")]
    assert eng.warm(trades=history, announce=announce) == []


@pytest.mark.parametrize(("last_trade_at", "open_episodes"), [
    (600, {("price-spike", "T")}),  # the jump at 501 s held 99 s before T's latest trade: open
    (801, set()),  # 300 s: the cooldown passed, over
])
def test_open_episodes_are_those_whose_condition_held_within_the_cooldown(last_trade_at, open_episodes):
    eng = engine(rule("price_spike", cooldown_seconds=300), rule("crossed_quote", cooldown_seconds=60))
    eng.on_trades([trade("T", 500, "100"), trade("T", 501, "106"), trade("T", last_trade_at, "106")])
    eng.on_quotes([quote("X", 0, "10", "9"), quote("X", 61, "10", "10.1")])  # crossed at 0 s, over by 60 s
    assert eng.open_episodes() == open_episodes


def _price_spike_seed(start: float, last: float, severity: str = "medium", type_: str = "price_spike"):
    return EpisodeSeed(rule="price-spike", type=type_, symbol="T", start=at(start), last=at(last), severity=severity)


def _jump(t0: float) -> list:
    return [trade("T", t0, "100"), trade("T", t0 + 1, "106")]  # +6 %: the default rule's medium


@pytest.mark.parametrize(("seed", "alerts_at_660"), [
    (None, 1),  # nothing to continue: a new episode
    (_price_spike_seed(60, 460), 0),  # the episode alerted at 60 s and last seen at 460 s goes on
    (_price_spike_seed(60, 60), 1),  # alerted at 60 s only: over by 360 s, the cooldown after it
    (_price_spike_seed(60, 460, type_="volume_anomaly"), 1),  # a rule now of another type: not its episode
])
def test_a_warm_up_continues_the_episode_the_stored_alerts_tell(seed, alerts_at_660):
    eng = engine(rule("price_spike", cooldown_seconds=300))
    eng.warm(trades=[trade("T", s, "100") for s in range(500, 659)], episodes=[seed] if seed else [])
    assert len(eng.on_trades(_jump(659))) == alerts_at_660


def test_a_history_episode_older_than_the_continued_one_does_not_raise_its_level():
    # A crossed quote (high) at 0 s is its own episode, over by 60 s; the episode alerted at 300 s is
    # a locked one (medium). A crossed quote at 310 s escalates it to high.
    eng = engine(rule("crossed_quote", cooldown_seconds=60, include_locked=True))
    seed = EpisodeSeed(rule="crossed-quote", type="crossed_quote", symbol="X", start=at(300), last=at(300),
                       severity="medium")
    eng.warm(quotes=[quote("X", 0, "10", "9"), quote("X", 300, "10", "10")], episodes=[seed])
    assert [s.severity for s in eng.on_quotes([quote("X", 310, "10", "9")])] == ["high"]
