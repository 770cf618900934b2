"""End to end with a real client: events published to real Kafka, moved by the
relay (driven a batch at a time here), delivered through Redis by a daphne
server running as a subprocess on a free port, received by the `websockets`
client library."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets
from django.conf import settings as django_settings
from django.db import connection, connections

from market.services import symbols_seed
from streaming.kafka import EventPublisher
from streaming.redis import redis_client
from streaming.relay import RelayPipeline
from streaming.runner import ConsumerRunner, RunnerOptions
from streaming.schemas import encode
from streaming.testing import consume_until, metric_sum, wait_for
from streaming.tests.test_websockets import alert, candle, quote, trade
from streaming.topics import ALERTS, CANDLES, QUOTES, TRADES, topic

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20
SLOW_CLIENT_BACKLOG = 256 * 1024  # bytes daphne may hold for one client before dropping it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env() -> dict[str, str]:
    """The environment of a web server on the test database and Redis, heartbeats every 0.2 s."""
    database = connection.settings_dict
    return {
        **os.environ,
        "TIMESCALE_URL": f"postgresql://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:"
                         f"{database['PORT']}/{database['NAME']}",
        "REDIS_URL": django_settings.REDIS_URL,
        "CHANNEL_LAYER": django_settings.CHANNEL_LAYER,
        "DATABASE_CONN_MAX_AGE": "0",  # hold no connection that would keep the test database from being dropped
        "WS_HEARTBEAT_SECONDS": "0.2",
        "WS_MAX_BACKLOG_BYTES": str(SLOW_CLIENT_BACKLOG),
        "METRICS_PORT": "0",
    }


@dataclass
class DaphneServer:
    url: str
    output: list[bytes]
    process: subprocess.Popen

    def log(self) -> str:
        return b"".join(self.output).decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM, as a supervisor stops it, without waiting."""
        self.process.terminate()


@pytest.fixture
def daphne_server(django_db_setup):
    """daphne on a free port, with server_env(); what it prints is kept."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "finstream.asgi:application"],
        cwd=ROOT, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    output: list[bytes] = []
    threading.Thread(target=lambda: output.extend(server.stdout), daemon=True).start()

    def listening():
        assert server.poll() is None, b"".join(output).decode()[-3000:]
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, timeout=30, what="daphne listening")
    yield DaphneServer(url=f"ws://127.0.0.1:{port}", output=output, process=server)
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def daphne(daphne_server):
    return daphne_server.url


def publish(events: dict[str, list]) -> None:
    publisher = EventPublisher(name="test")
    for base, messages in events.items():
        for message in messages:
            publisher.publish(topic(base), message.symbol, encode(message))
    publisher.flush()


def relay_trade(runner: ConsumerRunner, i: int) -> None:
    """Publish AAPL's trade `i` and relay it; in a thread of its own, whose database connection is closed here."""
    try:
        publish({TRADES: [trade(i)]})
        consume_until(runner, 1)
    finally:
        connections.close_all()


async def receive(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def receive_until(ws, condition) -> list[dict]:
    """Messages until one satisfies `condition` (heartbeats included), with a deadline."""
    seen = []
    async with asyncio.timeout(TIMEOUT):
        while not seen or not condition(seen[-1]):
            seen.append(json.loads(await ws.recv()))
    return seen


def test_live_events_reach_real_clients_through_kafka_the_relay_and_daphne(kafka_topics, redis_clean, daphne):
    symbols_seed(tickers=["AAPL", "MSFT"])
    runner = ConsumerRunner(RelayPipeline(), RunnerOptions(batch_size=1000, batch_wait=0.2))
    runner.subscribe()
    origin = daphne.replace("ws://", "http://")

    async def scenario():
        connect = lambda path: websockets.connect(daphne + path, origin=origin, open_timeout=TIMEOUT)  # noqa: E731
        # /ws/alerts as a script connects: no Origin header (browsers always send one).
        async with connect("/ws/trades/AAPL") as trades, connect("/ws/quotes/MSFT") as quotes, \
                websockets.connect(daphne + "/ws/alerts", open_timeout=TIMEOUT) as alerts, \
                connect("/ws/stream") as stream:
            await stream.send(json.dumps({"action": "subscribe", "channels": ["candles.1m.AAPL", "trades.MSFT"]}))
            assert (await receive(stream))["type"] == "subscribed"
            snapshots = [await receive(stream), await receive(stream)]
            assert {(m["type"], m["channel"], m["seq"]) for m in snapshots} == {
                ("snapshot", "candles.1m.AAPL", 0), ("snapshot", "trades.MSFT", 0)}

            events = {TRADES: [trade(i) for i in range(1, 6)] + [trade(1, "MSFT")],
                      QUOTES: [quote(1, "MSFT", "10.00"), quote(2, "MSFT", "10.01")],
                      CANDLES: [candle(3)], ALERTS: [alert(1)]}
            await asyncio.to_thread(publish, events)
            await asyncio.to_thread(consume_until, runner, sum(map(len, events.values())))

            got = [await receive(trades) for _ in range(5)]
            assert [m["data"]["id"] for m in got] == [f"t-AAPL-{i}" for i in range(1, 6)]
            assert [m["seq"] for m in got] == [1, 2, 3, 4, 5]
            last_quote = (await receive_until(quotes, lambda m: m["data"]["bid"] == "10.01"))[-1]
            assert last_quote["type"] == "quote" and last_quote["channel"] == "quotes.MSFT"
            assert (await receive(alerts))["data"]["id"] == alert(1).id
            on_stream = await receive_until(stream, lambda m: m["type"] == "heartbeat"
                                            and m["seqs"] == {"candles.1m.AAPL": 1, "trades.MSFT": 1})
            assert {(m["channel"], m["seq"]) for m in on_stream if m["type"] != "heartbeat"} == {
                ("candles.1m.AAPL", 1), ("trades.MSFT", 1)}

            await stream.send(json.dumps({"action": "unsubscribe", "channels": ["trades.MSFT"]}))
            await receive_until(stream, lambda m: m["type"] == "unsubscribed")
            await stream.send(json.dumps({"action": "subscribe", "channels": ["quotes.MSFT"]}))
            snapshot = (await receive_until(stream, lambda m: m["type"] == "snapshot"))[-1]
            assert (snapshot["channel"], snapshot["seq"], snapshot["data"]["bid"]) == ("quotes.MSFT", 1, "10.01")

        async with websockets.connect(daphne + "/ws/trades/NOPE", origin=origin) as unknown:
            assert (await receive(unknown))["code"] == "unknown_symbol"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(unknown.recv(), TIMEOUT)
            assert closed.value.rcvd.code == 4404

    try:
        asyncio.run(scenario())
    finally:
        runner.close()


def test_a_client_that_stops_reading_is_dropped_with_4008_by_the_real_server(redis_clean, daphne):
    # The client reads nothing (websockets stops reading the socket once one message waits), so
    # the kernel's buffers fill and then daphne's own; past WS_MAX_BACKLOG_BYTES the consumer
    # closes the connection with 4008 rather than buffer without end.
    symbols_seed(tickers=["AAPL"])
    relay = RelayPipeline()
    origin = daphne.replace("ws://", "http://")
    batches, per_batch = 100, 1000

    async def scenario():
        async with websockets.connect(daphne + "/ws/trades/AAPL", origin=origin, open_timeout=TIMEOUT,
                                      max_queue=1) as slow:
            for number in range(batches):
                first = number * per_batch + 1
                batch = [trade(i) for i in range(first, first + per_batch)]
                await asyncio.to_thread(relay.publish, {TRADES: batch})
            seqs = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(60):
                    while True:
                        seqs.append(json.loads(await slow.recv())["seq"])
            return closed.value.rcvd, seqs

    try:
        close, seqs = asyncio.run(scenario())
    finally:
        relay.close()
    # The 4008 close frame queues behind what the client never read: the client may see it, or,
    # if it drains too slowly for the close handshake, only the connection ending. The server's
    # own count says which clients it dropped.
    assert close is None or close.code == 4008, close
    assert 0 < len(seqs) < batches * per_batch
    # What it did get, through the socket's partial writes and then daphne's buffer, is in order and whole.
    assert seqs == list(range(1, len(seqs) + 1))
    with urllib.request.urlopen(daphne.replace("ws://", "http://") + "/metrics", timeout=TIMEOUT) as response:
        metrics_text = response.read().decode()
    assert metric_sum(metrics_text, "finstream_websocket_dropped_clients_total") == 1


def test_requests_queued_behind_a_close_are_not_served(redis_clean, daphne_server):
    # A request over the size limit closes the connection (4009); the requests the client sent after
    # it are not served: each would read snapshots from Redis for a client that is leaving, and its
    # reply could raise in the server if the close were still under way.
    symbols_seed(tickers=["AAPL", "MSFT"])
    origin = daphne_server.url.replace("ws://", "http://")
    requests = [json.dumps({"action": "subscribe", "channels": ["trades.AAPL", "quotes.MSFT"], "id": n})
                for n in range(100)]
    redis = redis_client()
    redis.config_resetstat()

    async def scenario():
        async with websockets.connect(daphne_server.url + "/ws/stream", origin=origin,
                                      open_timeout=TIMEOUT) as ws:
            for request in [*requests[:50], "x" * (django_settings.WS_MAX_MESSAGE_BYTES + 1), *requests[50:]]:
                await ws.send(request)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(TIMEOUT):
                    while True:
                        await ws.recv()
            return closed.value.rcvd.code

    assert asyncio.run(scenario()) == 4009
    snapshot_reads = redis.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)
    assert snapshot_reads == 50 * 2

    def connections_counted() -> float:
        with urllib.request.urlopen(origin + "/metrics", timeout=TIMEOUT) as response:
            return metric_sum(response.read().decode(), "finstream_websocket_connections", endpoint="stream")

    wait_for(lambda: connections_counted() == 0, timeout=TIMEOUT, what="no connection counted")
    assert "Traceback" not in daphne_server.log(), daphne_server.log()[-3000:]


def test_clients_keep_receiving_after_redis_drops_the_servers_subscription(kafka_topics, redis_clean, daphne_server):
    # Redis closes a subscriber's connection on a restart, or when the subscriber falls behind
    # its output buffer limit. The web process must subscribe again: its clients would otherwise
    # stay connected and receive nothing. What is sent meanwhile is lost: a gap in `seq`.
    symbols_seed(tickers=["AAPL"])
    runner = ConsumerRunner(RelayPipeline(), RunnerOptions(batch_size=1000, batch_wait=0.2))
    runner.subscribe()
    origin = daphne_server.url.replace("ws://", "http://")

    async def scenario():
        async with websockets.connect(daphne_server.url + "/ws/trades/AAPL", origin=origin,
                                      open_timeout=TIMEOUT) as ws:
            await asyncio.to_thread(relay_trade, runner, 1)
            assert (await receive(ws))["seq"] == 1
            assert redis_client().client_kill_filter(_type="pubsub") >= 1
            for i in range(2, 40):
                await asyncio.to_thread(relay_trade, runner, i)
                try:
                    got = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except TimeoutError:
                    continue
                return i, got
            pytest.fail("nothing received for 38 trades after the subscription was dropped")

    try:
        i, got = asyncio.run(scenario())
    finally:
        runner.close()
    assert (got["seq"], got["data"]["id"]) == (i, f"t-AAPL-{i}")
    log = daphne_server.log()  # the lost connection in one line, not a traceback a second
    assert "WARNING channels_redis.pubsub" in log and "ConnectionError" in log and "Traceback" not in log, log[-3000:]


def test_a_client_is_served_after_redis_dropped_the_idle_servers_connection(kafka_topics, redis_clean,
                                                                           daphne_server):
    # The last client gone, the web process leaves the relay's group. Redis restarting then drops
    # its idle connection unseen: the next client's join must not run on it (it was refused with
    # 4503, or failed with a 500, though Redis answered).
    symbols_seed(tickers=["AAPL"])
    runner = ConsumerRunner(RelayPipeline(), RunnerOptions(batch_size=1000, batch_wait=0.2))
    runner.subscribe()
    origin = daphne_server.url.replace("ws://", "http://")
    redis = redis_client()

    async def first_trade(i: int) -> dict:
        async with websockets.connect(daphne_server.url + "/ws/trades/AAPL", origin=origin,
                                      open_timeout=TIMEOUT) as ws:
            await asyncio.to_thread(relay_trade, runner, i)
            return await receive(ws)

    try:
        assert asyncio.run(first_trade(1))["seq"] == 1
        wait_for(lambda: redis.pubsub_numpat() == 0 and not redis.pubsub_channels(), timeout=TIMEOUT,
                 what="the server to leave the group")
        assert redis.client_kill_filter(_type="normal") + redis.client_kill_filter(_type="pubsub") >= 1
        got = asyncio.run(first_trade(2))
    finally:
        runner.close()
    assert (got.get("type"), got.get("seq")) == ("trade", 2), got
    assert "Traceback" not in daphne_server.log(), daphne_server.log()[-3000:]


def test_a_stopping_server_tells_its_clients_it_is_going_away(redis_clean, daphne_server):
    # A restart (SIGTERM) is told with 1001, so that a client can tell it from a crash (no close frame).
    symbols_seed(tickers=["AAPL"])

    async def scenario():
        async with websockets.connect(daphne_server.url + "/ws/stream", open_timeout=TIMEOUT) as ws:
            await ws.send(json.dumps({"action": "subscribe", "channels": ["trades.AAPL"]}))
            await receive_until(ws, lambda message: message.get("type") == "subscribed")
            daphne_server.stop()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(TIMEOUT):
                    while True:
                        await ws.recv()
            return closed.value.rcvd

    received = asyncio.run(scenario())
    assert received is not None and received.code == 1001, received
