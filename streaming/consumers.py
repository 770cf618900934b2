"""The WebSocket endpoints (docs/api.md):

    /ws/quotes/{symbol}  /ws/trades/{symbol}  /ws/alerts   one channel each, events only
    /ws/stream                                             many channels, subscribe/unsubscribe,
                                                           snapshots, heartbeats

Every event is one JSON text frame, made once by the relay (streaming/relay.py):
``{"type": "trade", "channel": "trades.AAPL", "seq": 42, "data": {...}}`` where
``data`` is the Kafka message and ``seq`` numbers the channel's events. A
client that sees a seq jump has missed events (delivery is at-most-once):
/ws/stream clients re-subscribe for a fresh snapshot.

Limits: a client message over WS_MAX_MESSAGE_BYTES is refused (close 1009);
more than WS_MAX_SUBSCRIPTIONS channels is an error; a client whose unsent
backlog passes WS_MAX_BACKLOG_BYTES is closed with 4008 (it cannot keep up,
and holding ever more for it would grow the server's memory without bound).
An unknown symbol closes with 4404 after an error message saying why (daphne
does not send close reasons, so the reason travels in that message).
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from market import selectors
from streaming import metrics
from streaming.groups import ALERTS_CHANNEL, BadChannel, Channel, channel_parse, group_for
from streaming.redis import redis_client
from streaming.relay import CHANNEL_KEY
from streaming.schemas import encode

log = logging.getLogger(__name__)

CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_TOO_SLOW = 4008
CLOSE_UNKNOWN_SYMBOL = 4404


def outbound_backlog(send) -> int | None:
    """Bytes the server holds for this client and has not yet written to its
    socket, or None where the server does not let us see it.

    daphne hands an application `functools.partial(server.handle_reply,
    protocol)` as `send`; the protocol's Twisted transport buffers what the
    socket did not take (and never blocks the sender, so without this check a
    slow client would grow that buffer for ever). An in-process server that
    queues messages (channels' WebsocketCommunicator in tests) exposes its
    queue instead.
    """
    args = getattr(send, "args", None)
    if args:
        transport = getattr(args[0], "transport", None)
        if transport is not None and hasattr(transport, "_tempDataLen"):
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    queue = getattr(send, "__self__", None)
    if isinstance(queue, asyncio.Queue):
        return sum(len(message.get("text") or message.get("bytes") or b"") for message in list(queue._queue))
    return None


def _error(code: str, message: str, **extra) -> str:
    return json.dumps({"type": "error", "code": code, "message": message, **extra})


@database_sync_to_async
def _known_symbols(symbols: set[str]) -> set[str]:
    return symbols & set(selectors.symbol_tickers())


@database_sync_to_async
def _candle_fallback(channel: Channel) -> bytes | None:
    candle = selectors.candle_current(symbol=channel.symbol, interval=channel.interval)
    return None if candle is None else encode(candle)


class _ChannelsConsumer(AsyncWebsocketConsumer):
    """Subscriptions to public channels, and delivery of the relay's batches."""

    endpoint = ""

    async def websocket_connect(self, message):
        self.subscribed: dict[str, int] = {}  # channel -> seq of the last event sent
        self.counted = False
        self.dropped = False
        await super().websocket_connect(message)

    async def opened(self) -> None:
        await self.accept()
        metrics.WEBSOCKET_CONNECTIONS.labels(endpoint=self.endpoint).inc()
        self.counted = True

    async def disconnect(self, code):
        for channel in list(self.subscribed):
            await self.channel_layer.group_discard(group_for(channel), self.channel_name)
        self.subscribed.clear()
        if self.counted:
            metrics.WEBSOCKET_CONNECTIONS.labels(endpoint=self.endpoint).dec()
            self.counted = False

    async def join(self, channels: list[str]) -> None:
        for channel in channels:
            if channel not in self.subscribed:
                self.subscribed[channel] = 0
                await self.channel_layer.group_add(group_for(channel), self.channel_name)

    async def leave(self, channels: list[str]) -> None:
        for channel in channels:
            if self.subscribed.pop(channel, None) is not None:
                await self.channel_layer.group_discard(group_for(channel), self.channel_name)

    async def refuse_unknown_symbol(self, symbol: str) -> None:
        await self.accept()
        await self.send(_error("unknown_symbol", f"unknown symbol {symbol[:40]!r}: GET /api/v1/symbols lists them"))
        await self.close(code=CLOSE_UNKNOWN_SYMBOL, reason="unknown symbol")

    # --- from the relay ------------------------------------------------------------------
    async def dispatch(self, message):
        # channels runs close_old_connections in a thread before every handler
        # (a thread hop per message, most of the cost of a delivery); relay
        # batches touch no database, so they skip it.
        if message["type"] == "stream.batch":
            await self.stream_batch(message)
        else:
            await super().dispatch(message)

    async def stream_batch(self, message):
        """One channel's events of one relay batch: [[seq, json text], ...]."""
        channel = message["channel"]
        last = self.subscribed.get(channel)
        if last is None or self.dropped:
            return  # unsubscribed while this batch was in flight
        backlog = outbound_backlog(self.base_send)
        if backlog is not None and backlog > settings.WS_MAX_BACKLOG_BYTES:
            await self.drop_slow_client(backlog)
            return
        for seq, text in message["events"]:
            if seq > last:  # at or below: already covered by this channel's snapshot
                await self.send(text)
                last = seq
        self.subscribed[channel] = last

    async def drop_slow_client(self, backlog: int) -> None:
        self.dropped = True
        metrics.WEBSOCKET_DROPPED_CLIENTS.labels(endpoint=self.endpoint).inc()
        log.info("dropping a slow WebSocket client of %s: %d bytes unsent", self.endpoint, backlog)
        await self.leave(list(self.subscribed))
        await self.close(code=CLOSE_TOO_SLOW, reason="too slow: reconnect and take a snapshot")


class _SymbolStreamConsumer(_ChannelsConsumer):
    kind = ""

    async def connect(self):
        symbol = self.scope["url_route"]["kwargs"]["symbol"].upper()
        if not await _known_symbols({symbol}):
            await self.refuse_unknown_symbol(symbol)
            return
        # Join first: an event relayed once the client sees the accept reaches it.
        await self.join([f"{self.kind}.{symbol}"])
        await self.opened()


class QuoteStreamConsumer(_SymbolStreamConsumer):
    """/ws/quotes/{symbol}: the symbol's quotes (conflated to the newest per relay batch)."""

    endpoint = "quotes"
    kind = "quotes"


class TradeStreamConsumer(_SymbolStreamConsumer):
    """/ws/trades/{symbol}: every trade of the symbol."""

    endpoint = "trades"
    kind = "trades"


class AlertStreamConsumer(_ChannelsConsumer):
    """/ws/alerts: every alert."""

    endpoint = "alerts"

    async def connect(self):
        await self.join([ALERTS_CHANNEL])
        await self.opened()


class MultiplexStreamConsumer(_ChannelsConsumer):
    """/ws/stream: one connection, many channels.

    Client → server: {"action": "subscribe" | "unsubscribe", "channels": [...], "id": any}
    Server → client: {"type": "subscribed" | "unsubscribed", "channels": [...], "id": ...};
    one {"type": "snapshot", "channel", "seq", "event", "data"} per newly
    subscribed channel, then its events with seq > the snapshot's;
    {"type": "heartbeat", "time", "seqs": {channel: last seq sent}} every
    WS_HEARTBEAT_SECONDS; {"type": "error", "code", "message", "id"} for a bad
    request (nothing of a refused request is applied).
    """

    endpoint = "stream"

    async def connect(self):
        await self.opened()
        self.heartbeat_task = asyncio.ensure_future(self.heartbeats())

    async def disconnect(self, code):
        task = getattr(self, "heartbeat_task", None)
        if task is not None:
            task.cancel()
        await super().disconnect(code)

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(settings.WS_HEARTBEAT_SECONDS)
            if self.dropped:
                return
            await self.send(json.dumps({"type": "heartbeat", "time": datetime.now(UTC).isoformat(),
                                        "seqs": dict(self.subscribed)}))

    async def receive(self, text_data=None, bytes_data=None):
        if bytes_data is not None or text_data is None:
            await self.send(_error("bad_request", 'send JSON text frames: {"action": "subscribe", "channels": [...]}'))
            return
        if len(text_data.encode()) > settings.WS_MAX_MESSAGE_BYTES:
            await self.send(_error("message_too_big", f"messages are at most {settings.WS_MAX_MESSAGE_BYTES} bytes"))
            await self.close(code=CLOSE_MESSAGE_TOO_BIG)
            return
        try:
            request = json.loads(text_data)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            await self.send(_error("bad_request", 'not a JSON object: send {"action": "subscribe", "channels": [...]}'))
            return
        request_id = request.get("id")
        action, names = request.get("action"), request.get("channels")
        if action not in ("subscribe", "unsubscribe"):
            await self.send(_error("unknown_action", f"{str(action)[:40]!r}: use subscribe or unsubscribe",
                                   id=request_id))
            return
        if not isinstance(names, list) or not names:
            await self.send(_error("bad_request", '"channels" must be a non-empty list, e.g. ["trades.AAPL"]',
                                   id=request_id))
            return
        if len(names) > settings.WS_MAX_SUBSCRIPTIONS:
            await self.send(_error("too_many_subscriptions",
                                   f"at most {settings.WS_MAX_SUBSCRIPTIONS} channels per connection", id=request_id))
            return
        try:
            channels = list({channel.name: channel for channel in map(channel_parse, names)}.values())
        except BadChannel as error:
            await self.send(_error("bad_channel", str(error), id=request_id))
            return
        if action == "unsubscribe":
            await self.leave([channel.name for channel in channels])
            await self.send(json.dumps({"type": "unsubscribed", "channels": [c.name for c in channels],
                                        "id": request_id}))
            return
        await self.subscribe(channels, request_id)

    async def subscribe(self, channels: list[Channel], request_id) -> None:
        new = [channel for channel in channels if channel.name not in self.subscribed]
        if len(self.subscribed) + len(new) > settings.WS_MAX_SUBSCRIPTIONS:
            await self.send(_error("too_many_subscriptions",
                                   f"at most {settings.WS_MAX_SUBSCRIPTIONS} channels per connection: "
                                   f"{len(self.subscribed)} already", id=request_id))
            return
        symbols = {channel.symbol for channel in new if channel.symbol}
        unknown = sorted(symbols - await _known_symbols(symbols)) if symbols else []
        if unknown:
            await self.send(_error("unknown_symbol", f"unknown symbols {', '.join(unknown)}: GET /api/v1/symbols "
                                                     "lists them", id=request_id, symbols=unknown))
            return
        # Join before reading the snapshots: an event published meanwhile
        # waits in our channel and is sent after them (if it is newer).
        await self.join([channel.name for channel in new])
        await self.send(json.dumps({"type": "subscribed", "channels": [c.name for c in channels], "id": request_id}))
        for channel in new:
            seq, event, data = await self.snapshot(channel)
            self.subscribed[channel.name] = max(self.subscribed[channel.name], seq)
            await self.send(f'{{"type":"snapshot","channel":"{channel.name}","seq":{seq},'
                            f'"event":{json.dumps(event)},"data":{data}}}')

    async def snapshot(self, channel: Channel) -> tuple[int, str | None, str]:
        """(seq, event type, data JSON) of the channel's newest event: what the
        relay last sent, or where it has sent nothing yet, what the pipeline
        keeps (latest quote and trade in Redis, the newest stored candle)."""
        state = await asyncio.to_thread(redis_client().hmget, CHANNEL_KEY.format(channel.name),
                                        "seq", "last_seq", "last")
        counter, last_seq, last = state
        if last is not None:
            stored = json.loads(last)
            return int(last_seq), stored["type"], json.dumps(stored["data"], separators=(",", ":"))
        seq = int(counter or 0)
        if channel.kind == "quotes":
            quote = await asyncio.to_thread(selectors.quote_latest, symbol=channel.symbol)
            return seq, "quote", "null" if quote is None else encode(quote).decode()
        if channel.kind == "trades":
            trade = await asyncio.to_thread(selectors.trade_latest, symbol=channel.symbol)
            return seq, "trade", "null" if trade is None else encode(trade).decode()
        if channel.kind == "candles":
            candle = await _candle_fallback(channel)
            return seq, "candle", "null" if candle is None else candle.decode()
        return seq, "alert", "null"
