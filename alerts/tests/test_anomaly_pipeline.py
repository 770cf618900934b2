"""detect_anomalies' pipeline on the real database and broker: a price spike
becomes one stored and published alert, and replaying the same trades into a
fresh detector stores nothing twice."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import get_args

import msgspec
import pytest
from django.db import transaction

from alerts.domain.rules import SEVERITIES, RuleType
from alerts.models import Alert, AlertRule
from alerts.pipelines import AnomalyPipeline
from alerts.services import alert_rules_seed
from market.services import symbols_seed
from market.tests.api_data import store_trades
from streaming import metrics
from streaming.schemas import Alert as AlertMessage
from streaming.schemas import Trade, decoder_for
from streaming.runner import Events
from streaming.testing import read_topic
from streaming.topics import ALERTS, TRADES, topic

pytestmark = pytest.mark.django_db(transaction=True)

START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def spike_trades(start=START, first_seq=1):
    prices = [Decimal("100.00")] * 30 + [Decimal("100.00") + Decimal(i) for i in range(1, 11)]
    return [Trade(id=f"sp-{i}", symbol="TSLA", ts=start + timedelta(seconds=i), seq=first_seq + i, price=price,
                  size=Decimal(100), side="buy") for i, price in enumerate(prices)]


def batch(trades, watermark=None):
    """A batch as the runner hands it over; by default every partition is read to its end."""
    return Events({TRADES: trades}, event_time={TRADES: watermark or max(t.ts for t in trades)})


def run_batch(pipeline, events):
    pipeline.prepare(events)
    with transaction.atomic():
        result = pipeline.store(events)
    pipeline.after_commit(result)
    return result


def test_every_alert_type_and_severity_is_counted_from_zero(kafka_topics):
    metrics.ALERTS.clear()  # what other tests counted: every series gone
    AnomalyPipeline().close()
    counted = {(sample.labels["type"], sample.labels["severity"]) for family in metrics.ALERTS.collect()
               for sample in family.samples if sample.name == "finstream_alerts_total"}
    assert {(kind, severity) for kind in get_args(RuleType) for severity in SEVERITIES} <= counted


def test_a_price_spike_is_stored_and_published_once(kafka_topics, redis_clean):
    alert_rules_seed()
    pipeline = AnomalyPipeline()
    result = run_batch(pipeline, batch(spike_trades()))
    pipeline.close()
    spikes = [a for a in result.alerts if a.type == "price_spike"]
    assert len(spikes) >= 1
    stored = Alert.objects.get(id=spikes[0].id)
    assert stored.symbol == "TSLA" and stored.rule.slug == "price-spike"
    published = [decoder_for(AlertMessage).decode(m.value()) for m in read_topic(topic(ALERTS))]
    assert {a.id for a in published} == {a.id for a in result.alerts}

    replay = AnomalyPipeline()
    again = run_batch(replay, batch(spike_trades()))
    replay.close()
    assert again.alerts == []
    assert Alert.objects.filter(type="price_spike").count() == len(spikes)


def test_a_retried_batch_does_not_feed_the_detector_twice(kafka_topics, redis_clean):
    alert_rules_seed()
    pipeline = AnomalyPipeline()
    events = batch(spike_trades())
    pipeline.prepare(events)
    first = pipeline._detected_for[1]
    pipeline.prepare(events)  # the runner retrying after a database error
    assert pipeline._detected_for[1] is first
    pipeline.close()


def test_trades_that_reuse_another_symbols_ids_are_other_trades(kafka_topics, redis_clean):
    # Vendors number trades per symbol (Binance) or per day: as in the trades table, a trade is its
    # (symbol, time, id). Told apart by id alone, NVDA's trades were dropped as TSLA's repeats.
    alert_rules_seed()
    pipeline = AnomalyPipeline()
    tsla = spike_trades()
    nvda = [msgspec.structs.replace(trade, symbol="NVDA") for trade in tsla]
    alerts = run_batch(pipeline, batch(tsla)).alerts + run_batch(pipeline, batch(nvda)).alerts
    pipeline.close()
    assert {alert.symbol for alert in alerts if alert.type == "price_spike"} == {"TSLA", "NVDA"}


def steady(symbol, seconds, prefix, start=START, price="50.00", first_seq=1):
    return [Trade(id=f"{prefix}-{i}", symbol=symbol, ts=start + timedelta(seconds=s), seq=first_seq + i,
                  price=Decimal(price), size=Decimal(10), side="sell") for i, s in enumerate(seconds)]


def test_a_symbol_on_a_partition_behind_is_not_called_stale(kafka_topics, redis_clean):
    # Catching up: AAPL's partition is read to 10 minutes in, MSFT's only to 1 minute. MSFT has
    # not stopped trading; its trades have not been read yet, so the watermark is at 1 minute.
    alert_rules_seed()
    pipeline = AnomalyPipeline()
    aapl, msft = steady("AAPL", range(0, 600, 2), "a"), steady("MSFT", range(0, 60, 2), "m")
    behind = run_batch(pipeline, batch(aapl + msft, watermark=msft[-1].ts))
    assert [a for a in behind.alerts if a.type == "stale_feed"] == []
    # Now MSFT's partition is read to its end and MSFT really stopped at 58 s: it is stale.
    more = steady("AAPL", range(600, 620, 2), "a2")
    caught_up = run_batch(pipeline, batch(more))
    pipeline.close()
    [stale] = [a for a in caught_up.alerts if a.type == "stale_feed"]
    assert stale.symbol == "MSFT"


def test_a_bad_rule_row_is_left_out_and_the_other_rules_go_on(kafka_topics, redis_clean, caplog):
    alert_rules_seed()
    # Past the admin's checks, as SQL or an older version could write it.
    AlertRule.objects.filter(slug="volume-anomaly").update(params={"bogus_key": 1})
    pipeline = AnomalyPipeline()
    result = run_batch(pipeline, batch(spike_trades()))
    pipeline.close()
    assert [a.type for a in result.alerts if a.type == "price_spike"]
    assert "volume-anomaly" not in [rule.rule for rule in pipeline._engine_current().rules]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("'volume-anomaly': unknown parameter 'bogus_key'" in e for e in errors), errors


def test_a_detector_restarted_behind_alerts_on_the_backlog_it_reads_again(kafka_topics, redis_clean):
    # build_candles stored every trade up to now; the detector stopped ten minutes ago and its
    # offsets resume there. Warmed from the wall clock, it would see the backlog as late trades.
    alert_rules_seed()
    resume = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    history = steady("TSLA", range(-300, 0, 2), "h", start=resume, price="100.00")
    backlog = spike_trades(start=resume, first_seq=1000) + steady(
        "TSLA", range(60, 600, 5), "b", start=resume, price="110.00", first_seq=2000)
    store_trades(history + backlog)
    pipeline = AnomalyPipeline()
    result = run_batch(pipeline, batch(backlog))
    pipeline.close()
    spikes = [a for a in result.alerts if a.type == "price_spike"]
    assert spikes and all(resume < a.ts < resume + timedelta(seconds=40) for a in spikes)


@pytest.mark.parametrize(("quiet_seconds", "stale_after"), [
    # MSFT stopped 12 s before the detector's resume point: its silence is this run's to alert.
    (range(-600, -10, 2), 120 - 12),
    # Its trades came from a file of older trades replayed beside the live feed: silent for 20
    # minutes where the detector resumes, it was never "stale" before, and is not after.
    (range(-1800, -1200, 2), None),
])
def test_a_symbol_quiet_where_the_detector_resumes(kafka_topics, redis_clean, quiet_seconds, stale_after):
    alert_rules_seed()
    symbols_seed(tickers=["MSFT", "TSLA"])
    resume = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    store_trades(steady("MSFT", quiet_seconds, "m", start=resume) + steady("TSLA", range(-600, 600, 2), "t", start=resume))
    pipeline = AnomalyPipeline()
    result = run_batch(pipeline, batch(steady("TSLA", range(0, 300, 2), "t2", start=resume)))
    pipeline.close()
    stale = [(a.symbol, a.ts) for a in result.alerts if a.type == "stale_feed"]
    assert stale == ([] if stale_after is None else [("MSFT", resume + timedelta(seconds=stale_after))])


def test_a_database_error_while_warming_loses_no_trade_of_the_batch(kafka_topics, redis_clean, monkeypatch):
    # The runner prepares a batch again after a database error: the first try must have changed
    # nothing (it had remembered the batch's trade ids, and the retry dropped them as repeats).
    from django.db import OperationalError

    from market import selectors as market_selectors

    alert_rules_seed()
    pipeline = AnomalyPipeline()
    reads = market_selectors.quotes_before
    failures = iter([OperationalError("server closed the connection unexpectedly")])

    def quotes_before_failing_once(**kwargs):
        for error in failures:
            raise error
        return reads(**kwargs)

    monkeypatch.setattr(market_selectors, "quotes_before", quotes_before_failing_once)
    events = batch(spike_trades())
    with pytest.raises(OperationalError):
        pipeline.prepare(events)
    result = run_batch(pipeline, events)
    pipeline.close()
    assert [a for a in result.alerts if a.type == "price_spike"]


def test_after_a_rule_change_a_symbol_read_before_is_warmed_through_what_was_read(kafka_topics, redis_clean,
                                                                                   caplog):
    # MSFT trades to 90 s, then a rule change builds a new engine while AAPL's partition is behind
    # (watermark 30 s). MSFT's state must reach 90 s, not the watermark: silent from 90 s to 200 s
    # (under the 120 s gap) it is not stale.
    alert_rules_seed()
    symbols_seed(tickers=["AAPL", "MSFT"])
    now = [0.0]
    pipeline = AnomalyPipeline(clock=lambda: now[0])
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    msft = steady("MSFT", range(0, 92, 2), "m", start=start)
    aapl = steady("AAPL", range(0, 32, 2), "a", start=start)
    store_trades(msft + aapl)
    run_batch(pipeline, batch(msft + aapl, watermark=start + timedelta(seconds=30)))
    AlertRule.objects.filter(slug="price-spike").update(cooldown_seconds=301, updated_at=datetime.now(UTC))
    now[0] += 60  # past the rules check interval: the next batch builds a new engine
    later = steady("AAPL", range(32, 60, 2), "a2", start=start, first_seq=100)
    store_trades(later)
    run_batch(pipeline, batch(later, watermark=start + timedelta(seconds=30)))
    assert sum("anomaly engine (re)built" in r.getMessage() for r in caplog.records) == 2
    last = steady("AAPL", range(60, 202, 2), "a3", start=start, first_seq=200)
    store_trades(last)
    result = run_batch(pipeline, batch(last))
    pipeline.close()
    assert [a.symbol for a in result.alerts if a.type == "stale_feed"] == []


def test_a_replayed_symbol_is_not_called_stale_after_a_rule_change(kafka_topics, redis_clean):
    # RIVN's trades come from files of yesterday's trades replayed beside the live feed (AAPL). A
    # rule change rebuilds the engine, which warms RIVN from the history before what it read: those
    # trades are history next to the watermark, not a feed that stopped while the market traded.
    alert_rules_seed()
    symbols_seed(tickers=["AAPL", "RIVN"])
    now = [0.0]
    pipeline = AnomalyPipeline(clock=lambda: now[0])
    live = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    yesterday = live - timedelta(days=1)
    aapl = steady("AAPL", range(0, 600, 2), "a", start=live)
    first_file = steady("RIVN", range(0, 600, 5), "r1", start=yesterday)
    second_file = steady("RIVN", range(1200, 1800, 5), "r2", start=yesterday, first_seq=1000)
    store_trades(aapl + first_file + second_file)
    alerts = run_batch(pipeline, batch(aapl[:50])).alerts
    alerts += run_batch(pipeline, batch(aapl[50:100] + first_file, watermark=live + timedelta(seconds=200))).alerts
    AlertRule.objects.filter(slug="crossed-quote").update(cooldown_seconds=61, updated_at=datetime.now(UTC))
    now[0] += 60  # past the rules check interval: the next batch builds a new engine
    alerts += run_batch(pipeline, batch(second_file + aapl[100:200], watermark=live + timedelta(seconds=400))).alerts
    alerts += run_batch(pipeline, batch(aapl[200:])).alerts
    pipeline.close()
    assert [(a.symbol, a.type) for a in alerts if a.symbol == "RIVN"] == []


def test_a_detector_restarted_during_a_replay_beside_the_live_feed_does_not_watch_the_replay(
        kafka_topics, redis_clean):
    # AAPL is live; RIVN's trades come from a file of the half hour before, replayed as fast as it can
    # be read, and stored as they are read. The detector restarts in the middle: its first batch
    # starts with RIVN's older trades, which are not where the market was.
    alert_rules_seed()
    symbols_seed(tickers=["AAPL", "RIVN"])
    live = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    aapl = steady("AAPL", range(0, 600, 2), "a", start=live)
    replay = steady("RIVN", range(0, 1800), "r", start=live - timedelta(minutes=30))

    def stored_and_detected(pipeline, trades, watermark=None):
        store_trades(trades)
        return run_batch(pipeline, batch(trades, watermark)).alerts

    first = AnomalyPipeline()
    alerts = stored_and_detected(first, aapl[:100])
    alerts += stored_and_detected(first, aapl[100:110] + replay[:610], watermark=aapl[109].ts)
    first.close()
    restarted = AnomalyPipeline()
    alerts += stored_and_detected(restarted, replay[610:1210] + aapl[110:120], watermark=aapl[119].ts)
    alerts += stored_and_detected(restarted, replay[1210:] + aapl[120:])
    restarted.close()
    assert [(a.symbol, a.type) for a in alerts if a.symbol == "RIVN"] == []
    # The minute the restarted detector's two batches split (20, from 1,200 s) is whole, as are the
    # nine after it (10 a second): the new engine knew where the market was, and did not end RIVN's
    # open minute at its first advance.
    [volume_rule] = restarted._engine_current()._volume
    assert list(volume_rule._states["RIVN"].baseline)[-10:] == [600.0] * 10


def around_a_restart(tape, restart, meanwhile=lambda alerts: None):
    """The alerts of the tape's trades before `restart` by one detector, and of those after by a
    new one (the tape stored first, as build_candles would have); `meanwhile` gets the first's."""
    store_trades(tape)
    first = AnomalyPipeline()
    before = run_batch(first, batch([t for t in tape if t.ts < restart])).alerts
    first.close()
    meanwhile(before)
    restarted = AnomalyPipeline()
    after = run_batch(restarted, batch([t for t in tape if t.ts >= restart])).alerts
    restarted.close()
    return before, after


def test_an_episode_alerted_before_a_restart_goes_on_after_it(kafka_topics, redis_clean):
    # A jump to 106 at 600 s and back to 100 at 850 s: within the price spike's 300 s cooldown, one
    # episode and one alert, whether or not the detector restarted between the two (at 798 s, when
    # the two minutes of history it warms from hold no move at all).
    alert_rules_seed()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    tape = (steady("REPRO", range(0, 600, 2), "f", start=start, price="100.00")
            + steady("REPRO", range(600, 850, 2), "j", start=start, price="106.00", first_seq=1000)
            + steady("REPRO", range(850, 1000, 2), "b", start=start, price="100.00", first_seq=2000))
    before, after = around_a_restart(tape, start + timedelta(seconds=798))
    assert [a.message for a in before if a.type == "price_spike"] == ["REPRO rose 6.00% in 2.0 s (100 → 106)"]
    assert [a for a in after if a.type == "price_spike"] == []


@pytest.mark.parametrize(("before", "after"), [
    ({"params": {"gap_seconds": 600}}, {"params": {"gap_seconds": 120}}),  # the gap lowered
    ({"enabled": False}, {"enabled": True}),  # the rule enabled: the engine before watched nothing
])
def test_a_stale_feed_rule_changed_alerts_the_silence_it_now_finds(kafka_topics, redis_clean, before, after):
    # MSFT silent for 300 s: not stale under a 600 s gap, or with the rule off; under a 120 s gap,
    # the new engine alerts it (the engine before never saw that silence as one).
    alert_rules_seed()
    AlertRule.objects.filter(slug="stale-feed").update(**before, updated_at=datetime.now(UTC))
    symbols_seed(tickers=["AAPL", "MSFT"])
    now = [0.0]
    pipeline = AnomalyPipeline(clock=lambda: now[0])
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    first = steady("MSFT", range(0, 100, 2), "m", start=start) + steady("AAPL", range(0, 400, 2), "a", start=start)
    store_trades(first)
    assert [a for a in run_batch(pipeline, batch(first)).alerts if a.type == "stale_feed"] == []
    AlertRule.objects.filter(slug="stale-feed").update(**after, updated_at=datetime.now(UTC))
    now[0] += 60
    later = steady("AAPL", range(400, 420, 2), "a2", start=start, first_seq=1000)
    store_trades(later)
    result = run_batch(pipeline, batch(later))
    pipeline.close()
    assert [a.symbol for a in result.alerts if a.type == "stale_feed"] == ["MSFT"]


def see_saw(symbol, seconds, prefix, start, first_seq=1, high="104.00"):
    """Trades every 2 s alternating 100 and `high`: a 4 % move inside every minute by default."""
    return [Trade(id=f"{prefix}-{i}", symbol=symbol, ts=start + timedelta(seconds=s), seq=first_seq + i,
                  price=Decimal(high) if i % 2 else Decimal("100.00"), size=Decimal(10), side="buy")
            for i, s in enumerate(seconds)]


def rule_changes(pipeline, now, changes, *, start, high, rounds_from=300):
    """After trades of 0-300 s, each change of the price rule in turn, 60 s of the clock and 200 s of
    trades apart; the price_spike alerts of the trades after the first change."""
    alerts = []
    for n, change in enumerate(changes):
        AlertRule.objects.filter(slug="price-spike").update(**change, updated_at=datetime.now(UTC))
        now[0] += 60  # past the rules check interval: the next batch builds a new engine
        for part in range(2):
            begin = rounds_from + n * 200 + part * 100
            later = see_saw("NVDA", range(begin, begin + 100, 2), f"n{n}-{part}", start, first_seq=begin * 10,
                            high=high)
            store_trades(later)
            alerts += [a for a in run_batch(pipeline, batch(later)).alerts if a.type == "price_spike"]
    return alerts


@pytest.mark.parametrize("change", [
    {"params": {"threshold_pct": 3.0}},  # the threshold lowered for every symbol
    {"symbol_overrides": {"NVDA": {"threshold_pct": 3.0}}},  # or for this one
])
def test_a_rule_lowered_while_its_condition_holds_alerts_it(kafka_topics, redis_clean, change):
    # NVDA moves 4 % within every minute: under the 5 % threshold no alert. Lowered to 3 %, the new
    # engine's warm-up finds the condition holding all along its history: that episode was alerted
    # under no rule, and without its first alert it would go on in silence for as long as it holds.
    alert_rules_seed()
    symbols_seed(tickers=["NVDA"])
    now = [0.0]
    pipeline = AnomalyPipeline(clock=lambda: now[0])
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    first = see_saw("NVDA", range(0, 300, 2), "n1", start)
    store_trades(first)
    assert [a for a in run_batch(pipeline, batch(first)).alerts if a.type == "price_spike"] == []
    spikes = rule_changes(pipeline, now, [change, {"params": {"threshold_pct": 2.5}}], start=start, high="104.00")
    pipeline.close()
    # Once, though lowered twice: the second rebuild's engine before had the episode open.
    assert [(a.symbol, a.severity) for a in spikes] == [("NVDA", "medium")]
    assert spikes[0].ts < start + timedelta(seconds=300)  # the history's episode, raised once it is seen
    assert Alert.objects.filter(type="price_spike").count() == 1


@pytest.mark.parametrize("change", [
    {"symbol_overrides": {"ZZZ": {"threshold_pct": 3.0}}},  # another symbol's override
    {"cooldown_seconds": 60},  # the condition is the same
    {"params": {"threshold_pct": 3.0}},  # it holds more often: the episode alerted goes on
])
def test_a_rule_change_does_not_alert_again_an_episode_the_engine_before_had_open(kafka_topics, redis_clean,
                                                                                   change):
    # NVDA moves 6 % within every minute from the start: one alert, at its first jump. The episode
    # goes on for longer than a warm-up's history (2 minutes) and the cooldown (300 s) since that alert.
    alert_rules_seed()
    symbols_seed(tickers=["NVDA"])
    now = [0.0]
    pipeline = AnomalyPipeline(clock=lambda: now[0])
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    tape = see_saw("NVDA", range(0, 900, 2), "n", start, high="106.00")
    store_trades(tape)
    assert len([a for a in run_batch(pipeline, batch(tape)).alerts if a.type == "price_spike"]) == 1
    assert rule_changes(pipeline, now, [change], start=start, high="106.00", rounds_from=900) == []
    pipeline.close()


def test_a_restart_does_not_announce_an_episode_its_warm_up_finds_open(kafka_topics, redis_clean):
    # The same see-saw under a 3 % threshold from the start: one alert before the restart, and the
    # episode goes on after it without another (the stored alert tells it).
    alert_rules_seed()
    AlertRule.objects.filter(slug="price-spike").update(params={"threshold_pct": 3.0}, updated_at=datetime.now(UTC))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    before, after = around_a_restart(see_saw("NVDA", range(0, 600, 2), "n", start), start + timedelta(seconds=300))
    assert [a.type for a in before if a.type == "price_spike"] == ["price_spike"]
    assert [a for a in after if a.type == "price_spike"] == []


def test_after_a_cold_start_a_symbol_first_read_on_a_partition_behind_is_watched(kafka_topics, redis_clean):
    # The first batch holds only AAPL's partition, read from 600 s (no watermark yet: MSFT's
    # partition is unread). MSFT's, 10 minutes behind, comes next and stops at 300 s: MSFT was live.
    alert_rules_seed()
    symbols_seed(tickers=["AAPL", "MSFT"])
    pipeline = AnomalyPipeline()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    aapl, msft = steady("AAPL", range(600, 1000, 2), "a", start=start), steady("MSFT", range(0, 302, 2), "m", start=start)
    store_trades(aapl + msft)
    alerts = run_batch(pipeline, Events({TRADES: aapl[:50]}, event_time={})).alerts
    alerts += run_batch(pipeline, batch(msft, watermark=start + timedelta(seconds=300))).alerts
    alerts += run_batch(pipeline, batch(aapl[50:])).alerts
    pipeline.close()
    assert [a.symbol for a in alerts if a.type == "stale_feed"] == ["MSFT"]


def test_an_episode_known_only_by_an_escalation_goes_on_after_a_restart(kafka_topics, redis_clean):
    # The episode's first alert is not stored (as when the rule was added while the price was
    # moving): its escalation says the start, and a restart continues the episode from it.
    alert_rules_seed()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    tape = (steady("REPRO", range(0, 600, 2), "f", start=start, price="100.00")
            + steady("REPRO", range(600, 610, 2), "j", start=start, price="106.00", first_seq=1000)
            + steady("REPRO", range(610, 850, 2), "k", start=start, price="109.00", first_seq=2000)
            + steady("REPRO", range(850, 1000, 2), "b", start=start, price="100.00", first_seq=3000))
    before, after = around_a_restart(tape, start + timedelta(seconds=798),
                                     meanwhile=lambda alerts: Alert.objects.filter(id=alerts[0].id).delete())
    assert [a.severity for a in before if a.type == "price_spike"] == ["medium", "high"]
    assert [a for a in after if a.type == "price_spike"] == []
