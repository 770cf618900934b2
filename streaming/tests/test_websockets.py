"""The WebSocket endpoints with channels' WebsocketCommunicator on the real
Redis channel layer, fed by the relay pipeline's publish (the Kafka leg
is in test_websockets_live.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from finstream.asgi import application
from market.services import LATEST_QUOTE_KEY, latest_events_store, symbols_seed
from streaming import metrics
from streaming.consumers import MultiplexStreamConsumer
from streaming.groups import FANOUT_GROUP
from streaming.hub import hub
from streaming.relay import RelayPipeline, relay_batches
from streaming.schemas import Alert, Candle, Quote, Trade
from streaming.topics import ALERTS, CANDLES, QUOTES, TRADES

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
ORIGIN = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
TIMEOUT = 10


def trade(i: int, symbol: str = "AAPL", price: str = "187.23") -> Trade:
    return Trade(id=f"t-{symbol}-{i}", symbol=symbol, ts=T0 + timedelta(milliseconds=i), seq=i,
                 price=Decimal(price), size=Decimal("100"), side="buy")


def quote(i: int, symbol: str = "AAPL", bid: str = "187.20") -> Quote:
    return Quote(id=f"q-{symbol}-{i}", symbol=symbol, ts=T0 + timedelta(milliseconds=i), bid=Decimal(bid),
                 ask=Decimal(bid) + Decimal("0.02"), bid_size=Decimal(300), ask_size=Decimal(500))


def candle(trades: int, symbol: str = "AAPL", close: str = "187.30", minute: int = 0) -> Candle:
    start = T0 + timedelta(minutes=minute)
    return Candle(symbol=symbol, interval="1m", start=start, open=Decimal("187.00"), high=Decimal("187.50"),
                  low=Decimal("186.90"), close=Decimal(close), volume=Decimal(100 * trades), trades=trades,
                  vwap=Decimal("187.2"), first_trade_ts=start, last_trade_ts=start + timedelta(seconds=trades))


def alert(i: int) -> Alert:
    return Alert(id=f"al-{i:024x}", rule="price-spike", type="price_spike", severity="high", symbol="AAPL",
                 message="AAPL rose 8%", ts=T0, detected_at=T0, observed={"change_pct": "8.00"})


@pytest.fixture
def market(redis_clean, settings):
    settings.WS_HEARTBEAT_SECONDS = 3600  # tests of heartbeats lower it
    symbols_seed(tickers=["AAPL", "MSFT"])
    relay = RelayPipeline()
    yield relay
    relay.close()


def relay_send(relay: RelayPipeline, **events) -> None:
    """One relay batch, as after the runner's commit; from async code via a thread."""
    relay.publish({
        TRADES: events.get("trades", []), QUOTES: events.get("quotes", []),
        CANDLES: events.get("candles", []), ALERTS: events.get("alerts", []),
    })


async def connect(path: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path, headers=ORIGIN)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected, path
    return communicator


async def receive(communicator: WebsocketCommunicator) -> dict:
    return json.loads(await communicator.receive_from(timeout=TIMEOUT))


async def send(relay, **events) -> None:
    await asyncio.to_thread(relay_send, relay, **events)


async def until(condition, timeout: float = TIMEOUT) -> None:
    """Poll `condition` with a deadline (never a fixed sleep for a result)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def run(scenario):
    async_to_sync(scenario)()


# --- the seed endpoints ------------------------------------------------------------------
def test_each_relayed_trade_reaches_the_trades_endpoint_once_with_consecutive_seqs(market):
    async def scenario():
        client = await connect("/ws/trades/aapl")
        await send(market, trades=[trade(1), trade(2), trade(1, "MSFT")])
        await send(market, trades=[trade(3)])
        got = [await receive(client) for _ in range(3)]
        assert [(m["type"], m["channel"], m["seq"], m["data"]["id"]) for m in got] == [
            ("trade", "trades.AAPL", 1, "t-AAPL-1"), ("trade", "trades.AAPL", 2, "t-AAPL-2"),
            ("trade", "trades.AAPL", 3, "t-AAPL-3"),
        ]
        assert got[0]["data"]["price"] == "187.23"  # the Kafka message as it is: exact decimal strings
        assert await client.receive_nothing(timeout=0.3)
        await client.disconnect()

    run(scenario)


def test_quotes_are_conflated_to_the_newest_of_each_batch(market):
    async def scenario():
        client = await connect("/ws/quotes/MSFT")
        await send(market, quotes=[quote(1, "MSFT", "10.00"), quote(3, "MSFT", "10.03"), quote(2, "MSFT", "10.02")])
        message = await receive(client)
        assert (message["type"], message["seq"], message["data"]["bid"]) == ("quote", 1, "10.03")
        assert await client.receive_nothing(timeout=0.3)
        await client.disconnect()

    run(scenario)


def test_the_alerts_endpoint_receives_every_alert(market):
    async def scenario():
        client = await connect("/ws/alerts")
        await send(market, alerts=[alert(1), alert(2)])
        got = [await receive(client) for _ in range(2)]
        assert [(m["type"], m["channel"], m["seq"], m["data"]["id"]) for m in got] == [
            ("alert", "alerts", 1, alert(1).id), ("alert", "alerts", 2, alert(2).id)]
        await client.disconnect()

    run(scenario)


@pytest.mark.parametrize(("path", "symbol"), [
    ("/ws/trades/NOPE", "NOPE"), ("/ws/quotes/NOPE", "NOPE"),
    ("/ws/trades/MſFT", "MſFT"),  # not MSFT: the long s is an S only in str.upper()
])
def test_an_unknown_symbol_is_refused_with_4404_and_a_reason(market, path, symbol):
    async def scenario():
        client = WebsocketCommunicator(application, path, headers=ORIGIN)
        connected, _ = await client.connect(timeout=TIMEOUT)
        assert connected  # accepted only to say why, then closed
        message = await receive(client)
        assert message["type"] == "error" and message["code"] == "unknown_symbol"
        assert symbol in message["message"]
        closed = await client.receive_output(timeout=TIMEOUT)
        assert closed == {"type": "websocket.close", "code": 4404, "reason": "unknown symbol"}

    run(scenario)


@pytest.mark.parametrize("path", ["/ws/nope", "/ws/trades/", "/ws/trades/AAPL/", "/"])
def test_a_path_with_no_endpoint_is_told_so_and_closed_with_4404(market, path):
    async def scenario():
        client = WebsocketCommunicator(application, path, headers=ORIGIN)
        connected, _ = await client.connect(timeout=TIMEOUT)
        assert connected
        message = await receive(client)
        assert (message["type"], message["code"]) == ("error", "not_found") and "/ws/stream" in message["message"]
        assert (await client.receive_output(timeout=TIMEOUT))["code"] == 4404

    run(scenario)


@pytest.mark.parametrize("origin", [b"http://evil.example", b"null", b"http://127.0.0.1.evil.example:8000"])
def test_a_page_from_another_origin_is_refused(market, origin):
    async def scenario():
        client = WebsocketCommunicator(application, "/ws/alerts", headers=[(b"origin", origin), (b"host", b"127.0.0.1")])
        connected, _ = await client.connect(timeout=TIMEOUT)
        assert not connected

    run(scenario)


def test_a_client_that_sends_no_origin_is_not_a_browser_page_and_is_let_in(market):
    async def scenario():
        client = WebsocketCommunicator(application, "/ws/trades/AAPL", headers=[(b"host", b"127.0.0.1")])
        connected, _ = await client.connect(timeout=TIMEOUT)
        assert connected
        await send(market, trades=[trade(1)])
        assert (await receive(client))["data"]["id"] == "t-AAPL-1"
        await client.disconnect()

    run(scenario)


# --- /ws/stream ----------------------------------------------------------------------------
def test_subscribe_sends_a_snapshot_then_only_newer_events(market):
    async def scenario():
        await send(market, quotes=[quote(1, "MSFT", "10.00")])
        await send(market, quotes=[quote(2, "MSFT", "10.01")])
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["quotes.msft", "trades.AAPL"], "id": 7})
        assert await receive(client) == {"type": "subscribed", "channels": ["quotes.MSFT", "trades.AAPL"], "id": 7}
        snapshots = {m["channel"]: m for m in [await receive(client), await receive(client)]}
        assert snapshots["quotes.MSFT"]["type"] == "snapshot"
        assert (snapshots["quotes.MSFT"]["seq"], snapshots["quotes.MSFT"]["data"]["bid"]) == (2, "10.01")
        assert snapshots["trades.AAPL"] == {"type": "snapshot", "channel": "trades.AAPL", "seq": 0,
                                            "event": "trade", "data": None}
        await send(market, quotes=[quote(3, "MSFT", "10.02")], trades=[trade(1)])
        got = {m["channel"]: m for m in [await receive(client), await receive(client)]}
        assert (got["quotes.MSFT"]["seq"], got["quotes.MSFT"]["data"]["bid"]) == (3, "10.02")
        assert got["trades.AAPL"]["seq"] == 1
        await client.disconnect()

    run(scenario)


def test_the_snapshot_is_the_newest_event_by_event_time_not_the_last_to_come(market):
    async def scenario():
        # A late print, an old quote and an update of last week's candle come after newer ones:
        # relayed live, but the snapshots stay the newest state, at the channel's last number.
        await send(market, trades=[trade(5, price="190.00"), trade(6, price="190.50")],
                   quotes=[quote(5, "MSFT", "10.05")], candles=[candle(3, minute=10)])
        await send(market, trades=[trade(2, price="150.00")], quotes=[quote(1, "MSFT", "9.00")],
                   candles=[candle(7, minute=-7 * 1440)])
        client = await connect("/ws/stream")
        channels = ["trades.AAPL", "quotes.MSFT", "candles.1m.AAPL"]
        await client.send_json_to({"action": "subscribe", "channels": channels})
        assert (await receive(client))["type"] == "subscribed"
        snapshots = {m["channel"]: m for m in [await receive(client) for _ in channels]}
        assert (snapshots["trades.AAPL"]["seq"], snapshots["trades.AAPL"]["data"]["price"]) == (3, "190.50")
        assert (snapshots["quotes.MSFT"]["seq"], snapshots["quotes.MSFT"]["data"]["bid"]) == (2, "10.05")
        assert (snapshots["candles.1m.AAPL"]["seq"], snapshots["candles.1m.AAPL"]["data"]["trades"]) == (2, 3)
        await send(market, trades=[trade(6, price="191.00")])  # the same time: the later one is the newest
        assert (await receive(client))["seq"] == 4
        await client.disconnect()
        again = await connect("/ws/stream")
        await again.send_json_to({"action": "subscribe", "channels": ["trades.AAPL"]})
        assert (await receive(again))["type"] == "subscribed"
        assert (await receive(again))["data"]["price"] == "191.00"
        await again.disconnect()

    run(scenario)


def test_an_event_dated_far_ahead_is_streamed_but_never_pins_the_snapshot(market, redis_clean):
    from streaming.relay import CHANNEL_KEY

    future = Trade(id="t-2100", symbol="AAPL", ts=datetime(2100, 1, 1, tzinfo=UTC), seq=1, price=Decimal("1.00"),
                   size=Decimal(1), side="buy")

    async def snapshot_price():
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["trades.AAPL"]})
        assert (await receive(client))["type"] == "subscribed"
        price = (await receive(client))["data"]["price"]
        await client.disconnect()
        return price

    async def scenario():
        await send(market, trades=[trade(5, price="190.00")])
        await send(market, trades=[future])
        assert await snapshot_price() == "190.00"
        # A snapshot kept by a relay before the horizon existed gives way to the next event.
        redis_clean.hset(CHANNEL_KEY.format("trades.AAPL"), "last_time", "4102444800000000")
        await send(market, trades=[trade(6, price="190.50")])
        assert await snapshot_price() == "190.50"

    run(scenario)


def test_subscribing_again_after_a_gap_sends_a_fresh_snapshot(market):
    async def scenario():
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["quotes.MSFT"]})
        assert [(await receive(client))["type"] for _ in range(2)] == ["subscribed", "snapshot"]
        await send(market, quotes=[quote(1, "MSFT", "10.00")])
        assert (await receive(client))["seq"] == 1
        # Listed twice and with a new channel: each gets one snapshot, the one already followed a fresh one.
        await client.send_json_to({"action": "subscribe", "channels": ["quotes.MSFT", "quotes.msft", "alerts"]})
        assert (await receive(client))["channels"] == ["quotes.MSFT", "alerts"]
        snapshots = {m["channel"]: m for m in [await receive(client), await receive(client)]}
        assert (snapshots["quotes.MSFT"]["type"], snapshots["quotes.MSFT"]["seq"]) == ("snapshot", 1)
        assert snapshots["quotes.MSFT"]["data"]["bid"] == "10.00" and snapshots["alerts"]["seq"] == 0
        await send(market, quotes=[quote(2, "MSFT", "10.01")])
        assert (await receive(client))["seq"] == 2  # live again, once
        assert await client.receive_nothing(timeout=0.3)
        await client.disconnect()

    run(scenario)


def test_events_relayed_while_the_snapshot_is_read_follow_it_and_only_the_newer_ones(market, monkeypatch):
    read_snapshot = MultiplexStreamConsumer.snapshot
    reading = asyncio.Event()
    release = asyncio.Event()

    async def slow_snapshot(self, channel):
        found = await read_snapshot(self, channel)
        reading.set()
        await release.wait()
        return found

    monkeypatch.setattr(MultiplexStreamConsumer, "snapshot", slow_snapshot)

    async def scenario():
        await send(market, trades=[trade(1), trade(2)])
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["trades.AAPL"]})
        await reading.wait()  # the snapshot (seq 2) is read; the client has joined the channel
        await send(market, trades=[trade(3), trade(4)])
        assert await client.receive_nothing(timeout=0.3)  # nothing may overtake the snapshot
        release.set()
        assert (await receive(client))["type"] == "subscribed"
        snapshot = await receive(client)
        assert (snapshot["type"], snapshot["seq"]) == ("snapshot", 2)
        assert [(await receive(client))["seq"] for _ in range(2)] == [3, 4]
        assert await client.receive_nothing(timeout=0.2)
        await client.disconnect()

    run(scenario)


@pytest.fixture
def memberships(monkeypatch):
    """The channel layer's group_add and group_discard calls, as (group, channel). Set
    `fail_next_add` to an error for the next group_add to raise once it has joined (the worst
    case: in the group, yet an error)."""
    layer = get_channel_layer()
    record = SimpleNamespace(added=[], discarded=[], fail_next_add=None)
    group_add, group_discard = layer.group_add, layer.group_discard

    async def recording_add(group, channel):
        await group_add(group, channel)
        record.added.append((group, channel))
        if record.fail_next_add is not None:
            error, record.fail_next_add = record.fail_next_add, None
            raise error

    async def recording_discard(group, channel):
        record.discarded.append((group, channel))
        await group_discard(group, channel)

    monkeypatch.setattr(layer, "group_add", recording_add)
    monkeypatch.setattr(layer, "group_discard", recording_discard)
    return record


def test_a_process_joins_the_fanout_group_once_for_all_its_clients_and_leaves_with_the_last(market, memberships):
    def joined():
        return [group for group, _ in memberships.added]

    def left():
        return [group for group, _ in memberships.discarded]

    async def scenario():
        clients = [await connect("/ws/trades/AAPL") for _ in range(3)] + [await connect("/ws/quotes/MSFT")]
        await send(market, trades=[trade(1), trade(2)], quotes=[quote(1, "MSFT")])
        for client in clients[:3]:
            assert [(await receive(client))["seq"] for _ in range(2)] == [1, 2]
        assert (await receive(clients[3]))["channel"] == "quotes.MSFT"
        assert joined() == [FANOUT_GROUP]
        for client in clients[:3]:
            await client.disconnect()
        await until(lambda: set(hub().members) == {"quotes.MSFT"})
        await asyncio.sleep(0.1)
        assert left() == []  # a client is left: the hub still reads
        await clients[3].disconnect()
        await until(lambda: left() == [FANOUT_GROUP] and hub().members == {})

    run(scenario)


def test_a_connection_that_fails_leaves_the_hub_and_the_connection_count(market, monkeypatch):
    async def failing_snapshot(self, channel):
        assert channel.name in hub().members  # joined: the hub holds the client
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(MultiplexStreamConsumer, "snapshot", failing_snapshot)
    connections = metrics.WEBSOCKET_CONNECTIONS.labels(endpoint="stream")
    before = connections._value.get()

    async def scenario():
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["trades.AAPL"]})
        with pytest.raises(ConnectionError):
            await client.receive_output(timeout=TIMEOUT)  # the application ends with the error
        await until(lambda: hub().members == {})

    run(scenario)
    assert connections._value.get() == before


def test_a_stream_connection_daphne_cancels_stops_its_heartbeats(market):
    """daphne cancels an application that takes too long to close: disconnect() never runs then."""
    async def scenario():
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["trades.AAPL"]})
        assert (await receive(client))["type"] in ("snapshot", "subscribed")
        heartbeats = [task for task in asyncio.all_tasks() if task.get_coro().__qualname__.endswith("heartbeats")]
        assert len(heartbeats) == 1
        client.future.cancel()
        await until(lambda: heartbeats[0].done())
        await until(lambda: hub().members == {})

    run(scenario)


def test_a_client_whose_waiting_events_pile_up_is_dropped_with_4008(market, monkeypatch):
    monkeypatch.setattr(MultiplexStreamConsumer, "max_waiting_batches", 2)
    never = asyncio.Event()

    async def stuck_snapshot(self, channel):
        await never.wait()

    monkeypatch.setattr(MultiplexStreamConsumer, "snapshot", stuck_snapshot)

    async def scenario():
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["trades.AAPL"]})
        await until(lambda: "trades.AAPL" in hub().members)  # joined; its snapshot never comes
        witness = await connect("/ws/trades/AAPL")  # served in the same rounds: each batch in one of its own
        for i in range(3):  # two wait for the snapshot; the third is one too many
            await send(market, trades=[trade(i + 1)])
            assert (await receive(witness))["seq"] == i + 1
        closed = await client.receive_output(timeout=TIMEOUT)
        assert (closed["type"], closed["code"]) == ("websocket.close", 4008)
        await witness.disconnect()
        await until(lambda: hub().members == {})

    run(scenario)


def test_a_snapshot_before_the_relay_ran_comes_from_the_latest_stored_state(market):
    latest_events_store(key_format=LATEST_QUOTE_KEY, events=[quote(5, "AAPL", "187.11")])

    async def scenario():
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["quotes.AAPL", "candles.1m.AAPL"]})
        await receive(client)
        snapshots = {m["channel"]: m for m in [await receive(client), await receive(client)]}
        assert snapshots["quotes.AAPL"]["data"]["bid"] == "187.11"
        assert snapshots["candles.1m.AAPL"]["data"] is None  # no candle stored
        await client.disconnect()

    run(scenario)


def test_candle_updates_are_conflated_per_bucket_and_ordered_by_bucket(market):
    async def scenario():
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["candles.1m.AAPL"]})
        await receive(client), await receive(client)
        await send(market, candles=[candle(1, minute=0), candle(1, minute=1), candle(2, minute=0, close="187.40")])
        got = [await receive(client), await receive(client)]
        assert [(m["seq"], m["data"]["start"], m["data"]["trades"]) for m in got] == [
            (1, "2026-03-02T14:30:00Z", 2), (2, "2026-03-02T14:31:00Z", 1)]
        await client.disconnect()

    run(scenario)


def test_unsubscribe_stops_the_channel(market):
    async def scenario():
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["trades.AAPL", "trades.MSFT"]})
        for _ in range(3):
            await receive(client)
        await client.send_json_to({"action": "unsubscribe", "channels": ["trades.AAPL"]})
        assert await receive(client) == {"type": "unsubscribed", "channels": ["trades.AAPL"], "id": None}
        await send(market, trades=[trade(1), trade(1, "MSFT")])
        message = await receive(client)
        assert message["channel"] == "trades.MSFT"
        assert await client.receive_nothing(timeout=0.3)
        await client.disconnect()

    run(scenario)


def test_sequence_numbers_continue_across_a_relay_restart(market):
    async def scenario():
        client = await connect("/ws/trades/AAPL")
        await send(market, trades=[trade(1), trade(2)])
        restarted = RelayPipeline()
        try:
            await send(restarted, trades=[trade(3)])
        finally:
            await asyncio.to_thread(restarted.close)
        assert [(await receive(client))["seq"] for _ in range(3)] == [1, 2, 3]
        await client.disconnect()

    run(scenario)


def test_two_relays_at_once_never_issue_a_number_twice_and_the_snapshot_is_the_newest(market, redis_clean):
    """As during a consumer group rebalance: numbering and the snapshot are one step in Redis."""
    from concurrent.futures import ThreadPoolExecutor

    from streaming.hub import FanoutHub
    from streaming.relay import CHANNEL_KEY

    class Collecting:
        def __init__(self):
            self.events: dict[int, str] = {}
            self.delivered = 0

        async def relay_batch(self, channel, batch):
            self.events.update(zip(batch.seqs, batch.texts))
            self.delivered += len(batch)

    async def scenario():
        fanout, subscriber = FanoutHub(get_channel_layer()), Collecting()
        await fanout.join("trades.AAPL", subscriber)
        relays = [market, RelayPipeline()]

        def relay_batches_of(relay, offset):
            for i in range(40):
                relay_send(relay, trades=[trade(offset + 3 * i + k) for k in range(3)])

        try:
            with ThreadPoolExecutor(2) as pool:
                await asyncio.gather(*(asyncio.wrap_future(pool.submit(relay_batches_of, relay, 1000 * n))
                                       for n, relay in enumerate(relays)))
        finally:
            await asyncio.to_thread(relays[1].close)
        await until(lambda: subscriber.delivered >= 240)
        assert sorted(subscriber.events) == list(range(1, 241)) and subscriber.delivered == 240
        state = redis_clean.hgetall(CHANNEL_KEY.format("trades.AAPL"))
        assert (state[b"seq"], state[b"last_seq"]) == (b"240", b"240")
        # The snapshot is the newest trade by event time, under the number it was relayed with.
        snapshot = json.loads(state[b"last"])
        assert snapshot["data"]["id"] == "t-AAPL-1119" and subscriber.events[snapshot["seq"]] == state[b"last"].decode()
        fanout.leave("trades.AAPL", subscriber)
        await until(lambda: not fanout.reading)

    run(scenario)


def test_heartbeats_carry_the_last_seq_of_each_channel(market, settings):
    settings.WS_HEARTBEAT_SECONDS = 0.1

    async def scenario():
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["trades.AAPL"]})
        # Heartbeats every 0.1 s may come between the replies: leave them out here.
        replies = []
        while len(replies) < 2:
            message = await receive(client)
            if message["type"] != "heartbeat":
                replies.append(message["type"])
        assert replies == ["subscribed", "snapshot"]
        await send(market, trades=[trade(1), trade(2)])
        seen = []
        while not (seen and seen[-1]["type"] == "heartbeat" and seen[-1]["seqs"] == {"trades.AAPL": 2}):
            seen.append(await receive(client))
        assert [m["type"] for m in seen if m["type"] == "trade"] == ["trade", "trade"]
        await client.disconnect()

    run(scenario)


@pytest.mark.parametrize(("request_", "code"), [
    ("not json", "bad_request"),
    ('["subscribe"]', "bad_request"),
    ('{"action": "dance", "channels": ["alerts"]}', "unknown_action"),
    ('{"action": "subscribe", "channels": []}', "bad_request"),
    ('{"action": "subscribe", "channels": ["candles.7m.AAPL"]}', "bad_channel"),
    ('{"action": "subscribe", "channels": ["books.AAPL"]}', "bad_channel"),
    ('{"action": "subscribe", "channels": ["trades.NOPE", "trades.AAPL"]}', "unknown_symbol"),
    ('{"action": "subscribe", "channels": ["alerts."]}', "bad_channel"),
    ("[" * 30_000 + "]" * 30_000, "bad_request"),  # deeper than the JSON parser goes
    # JSON has no such numbers, and the id is echoed: a reply with them would not parse in a browser
    ('{"action": "subscribe", "channels": ["alerts"], "id": NaN}', "bad_request"),
    ('{"action": "subscribe", "channels": ["alerts"], "id": -Infinity}', "bad_request"),
    ('{"action": "subscribe", "channels": ["alerts"], "id": 1e999}', "bad_request"),
])
def test_a_bad_request_gets_an_error_message_and_changes_nothing(market, request_, code):
    async def scenario():
        client = await connect("/ws/stream")
        await client.send_to(text_data=request_)
        message = await receive(client)
        assert (message["type"], message["code"]) == ("error", code)
        assert message["message"]
        await send(market, trades=[trade(1)])
        assert await client.receive_nothing(timeout=0.3)  # still connected, subscribed to nothing
        await client.send_json_to({"action": "subscribe", "channels": ["alerts"]})
        assert (await receive(client))["type"] == "subscribed"
        await client.disconnect()

    run(scenario)


def test_too_many_subscriptions_are_refused(market, settings):
    settings.WS_MAX_SUBSCRIPTIONS = 2

    async def scenario():
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["trades.AAPL", "quotes.AAPL"]})
        for _ in range(3):
            await receive(client)
        await client.send_json_to({"action": "subscribe", "channels": ["alerts"]})
        message = await receive(client)
        assert (message["type"], message["code"]) == ("error", "too_many_subscriptions")
        await client.disconnect()

    run(scenario)


def test_a_client_that_subscribes_faster_than_its_budget_is_refused_until_it_refills(market, settings):
    settings.WS_MAX_SUBSCRIPTIONS, settings.WS_MAX_SUBSCRIBES_PER_SECOND = 2, 1  # 2 at once, then 1 a second

    async def scenario():
        client = await connect("/ws/stream")
        channels = ["trades.AAPL", "quotes.AAPL"]
        await client.send_json_to({"action": "subscribe", "channels": channels, "id": 1})
        assert [(await receive(client))["type"] for _ in range(3)] == ["subscribed", "snapshot", "snapshot"]
        await client.send_json_to({"action": "subscribe", "channels": channels, "id": 2})  # again, at once
        message = await receive(client)
        assert (message["type"], message["code"], message["id"]) == ("error", "rate_limited", 2)
        await asyncio.sleep(2.1)  # refilled: two channels' worth
        await client.send_json_to({"action": "subscribe", "channels": channels, "id": 3})
        assert (await receive(client))["type"] == "subscribed"
        await client.disconnect()

    run(scenario)


@pytest.mark.parametrize("path", ["/ws/stream", "/ws/trades/AAPL", "/ws/alerts"])
def test_a_message_over_the_size_limit_closes_the_connection(market, settings, path):
    settings.WS_MAX_MESSAGE_BYTES = 1024

    async def scenario():
        client = await connect(path)
        await client.send_to(text_data=json.dumps({"action": "subscribe", "channels": ["alerts"] * 300}))
        message = await receive(client)
        assert message["code"] == "message_too_big"
        assert (await client.receive_output(timeout=TIMEOUT))["code"] == 4009  # daphne sends no 1009

    run(scenario)


def test_a_client_that_does_not_read_is_dropped_with_4008(market, settings):
    settings.WS_MAX_BACKLOG_BYTES = 2000
    dropped = metrics.WEBSOCKET_DROPPED_CLIENTS.labels(endpoint="trades")
    before = dropped._value.get()

    async def scenario():
        client = await connect("/ws/trades/AAPL")

        def written_or_closed(count):
            queued = list(client.output_queue._queue)
            return len(queued) >= count or any(m["type"] == "websocket.close" for m in queued)

        for batch in range(10):  # ~200 bytes per trade: the backlog passes 2000 bytes in the second batch
            await send(market, trades=[trade(batch * 10 + i) for i in range(10)])
            await until(lambda: written_or_closed(10 * (batch + 1)))  # each in a round of its own
        # The client reads nothing until the server has given up on it.
        await until(lambda: any(m["type"] == "websocket.close" for m in list(client.output_queue._queue)))
        outputs = []
        while not outputs or outputs[-1]["type"] != "websocket.close":
            outputs.append(await client.receive_output(timeout=TIMEOUT))
        assert outputs[-1]["code"] == 4008
        assert 10 <= len(outputs) - 1 < 100  # it got what was sent before the bound, then nothing more

    run(scenario)
    assert dropped._value.get() == before + 1


def test_under_daphne_the_write_that_takes_a_client_past_its_backlog_bound_closes_it_in_that_round():
    from streaming.consumers import TradeStreamConsumer
    from streaming.ws_frames import PreparedBatch

    class UnreadConnection:
        """daphne's side of a client that reads nothing: every byte written stays unsent."""

        def __init__(self):
            self.unsent = 0

        def write(self, frames, limit):
            if self.unsent <= limit:
                self.unsent += len(frames)
            return self.unsent

    sent = []

    async def base_send(message):
        sent.append(message)

    async def scenario():
        consumer = TradeStreamConsumer()
        consumer.base_send = base_send
        consumer.subscribed, consumer.waiting, consumer.dropped = {"trades.AAPL": 0}, {}, False
        consumer.daphne, consumer.max_backlog = UnreadConnection(), 1000
        assert consumer.relay_batch("trades.AAPL", PreparedBatch([[1, "x" * 600]])) is None
        assert not consumer.dropped and consumer.daphne.unsent == 604
        assert consumer.relay_batch("trades.AAPL", PreparedBatch([[2, "x" * 600]])) is None
        assert consumer.dropped  # 1,208 bytes unsent: closed now, before the next round adds to them
        await consumer.closing
        assert sent == [{"type": "websocket.close", "code": 4008,
                         "reason": "too slow: reconnect and take a snapshot"}]
        assert consumer.relay_batch("trades.AAPL", PreparedBatch([[3, "x"]])) is None
        assert consumer.daphne.unsent == 1208

    run(scenario)


class _Transport:
    """Twisted's side of a connection: what it holds unsent, and a socket taking `takes` bytes a send."""

    def __init__(self, *, held: int = 0, takes: int | None = None):
        self.dataBuffer, self.offset, self._tempDataLen = b"x" * held, 0, 0
        self.connected, self.disconnecting = True, False
        self.sent: list[bytes] = []
        transport = self

        class Socket:
            def send(self, data):
                taken = len(data) if takes is None else min(takes, len(data))
                transport.sent.append(data[:taken])
                return taken

        self.socket = Socket()


class _Protocol:
    """autobahn's side: its states, and sendData queueing on the transport."""

    STATE_OPEN, STATE_CLOSING, SEND_STATE_GROUND = 1, 2, 0

    def __init__(self, transport, *, state=1, compress=None, send_state=0):
        self.transport, self.state, self._perMessageCompress, self.send_state = transport, state, compress, send_state
        self.send_queue = []

    def sendData(self, data):
        self.transport._tempDataLen += len(data)


def test_a_daphne_write_goes_straight_into_a_socket_with_nothing_queued_and_reports_what_is_left():
    from streaming.consumers import DaphneSocket

    whole = _Transport()
    assert DaphneSocket(_Protocol(whole)).write(b"abcdef", 100) == 0 and whole.sent == [b"abcdef"]
    partly = _Transport(takes=2)
    assert DaphneSocket(_Protocol(partly)).write(b"abcdef", 100) == 4  # the rest queued behind
    queued = _Transport(held=10)
    assert DaphneSocket(_Protocol(queued)).write(b"abcdef", 100) == 16 and queued.sent == []  # after what waits
    full = _Transport(held=101)
    assert DaphneSocket(_Protocol(full)).write(b"abcdef", 100) == 101 and full._tempDataLen == 0  # past it: nothing
    assert DaphneSocket(_Protocol(_Transport(), compress=object())).write(b"abcdef", 100) is None  # through ASGI
    assert DaphneSocket(_Protocol(_Transport(), send_state=3)).write(b"abcdef", 100) is None  # mid-message
    closing = _Transport()
    assert DaphneSocket(_Protocol(closing, state=2)).write(b"abcdef", 100) == 0 and closing.sent == []


def test_relay_streams_batches_for_the_relay_batch_wait_not_the_stores(monkeypatch, settings):
    from django.core.management import call_command

    from streaming.management.commands import relay_streams

    settings.RELAY_BATCH_WAIT_MS, settings.CONSUMER_BATCH_WAIT_MS = 40, 200
    started = {}
    monkeypatch.setattr(relay_streams, "run_pipeline",
                        lambda pipeline, **kwargs: started.update(kwargs, pipeline=pipeline))
    call_command("relay_streams")
    started["pipeline"].close()
    assert started["options"].batch_wait == 0.04


def test_relay_batches_number_nothing_twice_and_keep_trades_in_order():
    batches = relay_batches({TRADES: [trade(2), trade(1), trade(1, "MSFT")], QUOTES: [quote(1), quote(1, "MSFT")]})
    assert [json.loads(data)["id"] for _kind, data, _time in batches["trades.AAPL"]] == ["t-AAPL-2", "t-AAPL-1"]
    assert set(batches) == {"trades.AAPL", "trades.MSFT", "quotes.AAPL", "quotes.MSFT"}


def test_the_hub_renews_memberships_that_redis_channel_layer_expires(redis_clean):
    from channels_redis.core import RedisChannelLayer
    from django.conf import settings

    from streaming.hub import FanoutHub
    from streaming.relay import MESSAGE_TYPE

    class Collecting:
        def __init__(self):
            self.batches = []

        async def relay_batch(self, channel, batch):
            self.batches.append(batch.texts)

    async def scenario():
        layer = RedisChannelLayer(hosts=[settings.REDIS_URL], group_expiry=2)
        fanout, subscriber = FanoutHub(layer), Collecting()
        await fanout.join("trades.AAPL", subscriber)
        await asyncio.sleep(3)  # past the expiry: only a renewed membership still receives
        await layer.group_send(FANOUT_GROUP, {"type": MESSAGE_TYPE, "channels": {"trades.AAPL": [[1, '{"seq":1}']]}})
        await until(lambda: subscriber.batches == [['{"seq":1}']])
        fanout.leave("trades.AAPL", subscriber)
        await until(lambda: not fanout.reading)
        await layer.flush()

    run(scenario)


class _Recording:
    """A hub subscriber that records the seqs of each delivery; during the first it runs `while_busy`."""

    def __init__(self, while_busy):
        self.deliveries: list[list[int]] = []
        self.while_busy = while_busy

    async def relay_batch(self, channel, batch):
        self.deliveries.append(list(batch.seqs))
        if len(self.deliveries) == 1:
            await self.while_busy()


def _relay_message(first: int, count: int = 2, channel: str = "trades.AAPL") -> dict:
    from streaming.relay import MESSAGE_TYPE

    return {"type": MESSAGE_TYPE,
            "channels": {channel: [[seq, f'{{"seq":{seq}}}'] for seq in range(first, first + count)]}}


def test_batches_that_arrive_during_a_round_go_out_together_in_the_next_one_in_order(redis_clean):
    from streaming.hub import FanoutHub

    async def scenario():
        layer = get_channel_layer()
        fanout = FanoutHub(layer)

        async def relay_three_more():  # while this round is still busy
            for first in (3, 5, 7):
                await layer.group_send(FANOUT_GROUP, _relay_message(first))
            await until(lambda: fanout.waiting_events == 6)

        subscriber = _Recording(relay_three_more)
        await fanout.join("trades.AAPL", subscriber)
        await layer.group_send(FANOUT_GROUP, _relay_message(1))
        await until(lambda: len(subscriber.deliveries) == 2)
        assert subscriber.deliveries == [[1, 2], [3, 4, 5, 6, 7, 8]]  # one write per client, not three
        fanout.leave("trades.AAPL", subscriber)
        await until(lambda: not fanout.reading)

    run(scenario)


def test_the_hub_drops_batches_past_its_bound_and_goes_on(redis_clean, caplog):
    from streaming.hub import FanoutHub

    async def scenario():
        layer = get_channel_layer()
        fanout = FanoutHub(layer)
        fanout.max_pending_events = 5

        async def relay_three_more():
            for first in (3, 5, 7):
                await layer.group_send(FANOUT_GROUP, _relay_message(first))
            await until(lambda: "dropping a batch of trades.AAPL" in caplog.text)

        subscriber = _Recording(relay_three_more)
        await fanout.join("trades.AAPL", subscriber)
        await layer.group_send(FANOUT_GROUP, _relay_message(1))
        await until(lambda: len(subscriber.deliveries) == 2)
        await layer.group_send(FANOUT_GROUP, _relay_message(9))
        await until(lambda: len(subscriber.deliveries) == 3)
        # 7-8 would have made 6 events waiting: dropped (the client sees 6 -> 9), and the hub goes on.
        assert subscriber.deliveries == [[1, 2], [3, 4, 5, 6], [9, 10]]
        fanout.leave("trades.AAPL", subscriber)
        await until(lambda: not fanout.reading)

    run(scenario)
    assert "dropping a batch of trades.AAPL" in caplog.text


def test_one_relay_message_reaches_each_followed_channel_in_one_round_and_the_rest_is_skipped(redis_clean, caplog):
    from streaming.hub import FanoutHub
    from streaming.relay import MESSAGE_TYPE

    async def scenario():
        layer = get_channel_layer()
        fanout = FanoutHub(layer)
        trades, quotes = _Recording(lambda: asyncio.sleep(0)), _Recording(lambda: asyncio.sleep(0))
        await fanout.join("trades.AAPL", trades)
        await fanout.join("quotes.MSFT", quotes)
        await layer.group_send(FANOUT_GROUP, {"type": MESSAGE_TYPE, "channels": {
            "trades.AAPL": [[1, "{}"], [2, "{}"]], "quotes.MSFT": [[7, "{}"]], "trades.TSLA": [[1, "{}"]],
            "quotes.AAPL": "not even a batch: nobody here follows it, so it is never read"}})
        await until(lambda: trades.deliveries and quotes.deliveries)
        await asyncio.sleep(0.1)
        assert (trades.deliveries, quotes.deliveries) == ([[1, 2]], [[7]])
        assert "quotes.AAPL" not in caplog.text  # not even looked at
        assert set(fanout.members) == {"trades.AAPL", "quotes.MSFT"}
        fanout.leave("trades.AAPL", trades)
        fanout.leave("quotes.MSFT", quotes)
        await until(lambda: not fanout.reading)

    run(scenario)


def test_a_join_whose_group_add_fails_leaves_no_member_behind_and_the_next_join_works(redis_clean, memberships):
    from streaming.hub import FanoutHub

    layer = get_channel_layer()
    memberships.fail_next_add = ConnectionError("Redis went away")

    def members():
        return {channel for _, channel in memberships.added} - {channel for _, channel in memberships.discarded}

    async def scenario():
        fanout, subscriber = FanoutHub(layer), _Recording(lambda: asyncio.sleep(0))
        with pytest.raises(ConnectionError):
            await fanout.join("trades.AAPL", subscriber)
        await until(lambda: not members())  # nobody would have read that member: it is gone
        assert not fanout.reading and fanout.members == {}
        await fanout.join("trades.AAPL", subscriber)
        assert fanout.reading and len(members()) == 1
        await layer.group_send(FANOUT_GROUP, _relay_message(1))
        await until(lambda: subscriber.deliveries == [[1, 2]])
        fanout.leave("trades.AAPL", subscriber)
        await until(lambda: not fanout.reading and not members())

    run(scenario)


def test_a_malformed_relay_message_is_skipped_and_the_others_are_delivered(redis_clean, caplog):
    from streaming.hub import FanoutHub

    async def scenario():
        layer = get_channel_layer()
        fanout = FanoutHub(layer)
        subscriber = _Recording(lambda: asyncio.sleep(0))
        await fanout.join("trades.AAPL", subscriber)
        for malformed in ([[1]], [["1", "{}"]], [[3, "{}"], [2, "{}"]], "x"):
            await layer.group_send(FANOUT_GROUP, {**_relay_message(1), "channels": {"trades.AAPL": malformed}})
        await layer.group_send(FANOUT_GROUP, {**_relay_message(1), "channels": [["trades.AAPL", [[1, "{}"]]]]})
        await layer.group_send(FANOUT_GROUP, _relay_message(4))  # likely in the same round
        await until(lambda: subscriber.deliveries == [[4, 5]])
        assert caplog.text.count("a malformed batch of trades.AAPL skipped") == 4
        assert caplog.text.count("a relay message without channels skipped") == 1
        fanout.leave("trades.AAPL", subscriber)
        await until(lambda: not fanout.reading)

    run(scenario)


def test_a_subscription_redis_fails_halfway_through_subscribes_nothing_and_leaves_the_hub(market, monkeypatch):
    import redis

    read_snapshot = MultiplexStreamConsumer.snapshot
    reads = []

    async def third_read_fails(self, channel):
        reads.append(channel.name)
        if len(reads) == 3:
            raise redis.ConnectionError("Redis went away")
        return await read_snapshot(self, channel)

    monkeypatch.setattr(MultiplexStreamConsumer, "snapshot", third_read_fails)

    async def scenario():
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["trades.AAPL"], "id": 1})
        assert [(await receive(client))["type"] for _ in range(2)] == ["subscribed", "snapshot"]
        # Again (after a gap, say) with a second channel, whose snapshot Redis cannot read.
        await client.send_json_to({"action": "subscribe", "channels": ["trades.AAPL", "quotes.AAPL"], "id": 2})
        message = await receive(client)
        assert (message["type"], message["code"], message["id"]) == ("error", "service_unavailable", 2)
        assert (await client.receive_output(timeout=TIMEOUT))["code"] == 4503
        assert reads == ["trades.AAPL", "trades.AAPL", "quotes.AAPL"]
        await until(lambda: hub().members == {})

    run(scenario)


def test_a_subscription_while_redis_is_away_is_refused_with_its_id_and_closed_with_4503(market, redis_away):
    async def scenario():
        client = await connect("/ws/stream")
        await client.send_json_to({"action": "subscribe", "channels": ["trades.AAPL"], "id": 7})
        message = await receive(client)  # the reply to the request: no "subscribed" before it
        assert (message["type"], message["code"], message["id"]) == ("error", "service_unavailable", 7)
        assert (await client.receive_output(timeout=TIMEOUT))["code"] == 4503

    run(scenario)
