"""The WebSocket endpoints (docs/api.md):

    /ws/quotes/{symbol}  /ws/trades/{symbol}  /ws/alerts   one channel each, events only
    /ws/stream                                             many channels, subscribe/unsubscribe,
                                                           snapshots, heartbeats

Every event is one JSON text frame, made once by the relay (streaming/relay.py):
``{"type": "trade", "channel": "trades.AAPL", "seq": 42, "data": {...}}`` where
``data`` is the Kafka message and ``seq`` numbers the channel's events. A
client that sees a seq jump has missed events: /ws/stream clients
re-subscribe for a fresh snapshot. After a relay crash a batch may come again
under new numbers (delivery is at-least-once, streaming/relay.py).

Limits: a client message over WS_MAX_MESSAGE_BYTES is refused (close 4009:
daphne's WebSocket library sends no 1009 from a server);
more than WS_MAX_SUBSCRIPTIONS channels is an error; a client whose unsent
backlog passes WS_MAX_BACKLOG_BYTES is closed with 4008 (it cannot keep up,
and holding ever more for it would grow the server's memory without bound).
An unknown symbol closes with 4404 after an error message saying why (daphne
does not send close reasons, so the reason travels in that message). A
stopping server closes every connection with 1001.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import weakref
from collections.abc import Awaitable
from datetime import UTC, datetime

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from finstream.logs import error_text
from market import selectors
from streaming import metrics
from streaming.budget import TokenBucket
from streaming.groups import ALERTS_CHANNEL, BadChannel, Channel, channel_parse
from streaming.hub import hub
from streaming.redis import REDIS_AWAY, redis_client
from streaming.relay import CHANNEL_KEY
from streaming.schemas import encode, symbol_upper
from streaming.ws_frames import PreparedBatch

log = logging.getLogger(__name__)

CLOSE_MESSAGE_TOO_BIG = 4009
CLOSE_TOO_SLOW = 4008
CLOSE_NOT_FOUND = 4404  # an unknown symbol, or path
CLOSE_UNAVAILABLE = 4503  # Redis did not answer a subscription's join or snapshot: connect again shortly
CLOSE_GOING_AWAY = 1001  # the server stops (a restart): connect again
GOING_AWAY_SECONDS = 0.5  # how long a stopping server waits for its close frames to go out


class DaphneSocket:
    """The daphne connection behind an ASGI `send`, for the two things ASGI
    cannot do: tell how much the server holds unsent for the client, and take
    ready-made WebSocket frames (streaming/ws_frames.py) in one write.

    daphne hands an application `functools.partial(server.handle_reply,
    protocol)` as `send`; the protocol is autobahn's, over a Twisted transport
    that buffers what the socket did not take and never blocks the sender (so
    without the backlog check a slow client would grow that buffer for ever).
    """

    # The connections open in this process: told 1001 when daphne stops.
    _open: weakref.WeakSet = weakref.WeakSet()
    _going_away_installed = False

    def __init__(self, protocol) -> None:
        self.protocol = protocol

    @classmethod
    def behind(cls, send) -> DaphneSocket | None:
        args = getattr(send, "args", None)
        protocol = args[0] if args else None
        transport = getattr(protocol, "transport", None)
        if not hasattr(protocol, "sendData") or not hasattr(transport, "_tempDataLen"):
            return None
        return cls(protocol)

    def open(self) -> bool:
        """False once either side has begun closing: the client is leaving, and autobahn refuses sends."""
        return self.protocol.state == self.protocol.STATE_OPEN

    def opened(self) -> None:
        """Count the connection among those told 1001 (going away) when daphne stops, a restart or a
        stop: daphne would drop them without a close frame, and a client could not tell it from a
        crash. (Twisted is imported here, under daphne: importing its reactor elsewhere installs one.)"""
        DaphneSocket._open.add(self.protocol)
        if not DaphneSocket._going_away_installed:
            from twisted.internet import reactor

            reactor.addSystemEventTrigger("before", "shutdown", DaphneSocket._going_away)
            DaphneSocket._going_away_installed = True

    @staticmethod
    def _going_away():
        from twisted.internet import reactor, task

        told = 0
        for protocol in list(DaphneSocket._open):
            if protocol.state == protocol.STATE_OPEN:
                # sendClose takes only 1000 and 3000-4999; 1001 is the close code for this.
                protocol.sendCloseFrame(code=CLOSE_GOING_AWAY, reasonUtf8=b"server restarting")
                told += 1
        log.info("WebSocket: %d connection(s) told the server is going away", told)
        # The reactor stops once this fires: until then it sends the frames.
        return task.deferLater(reactor, GOING_AWAY_SECONDS, lambda: None) if told else None

    def backlog(self) -> int:
        transport = self.protocol.transport
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen

    def write(self, frames: bytes, limit: int) -> int | None:
        """Write frames as they are, unless the server already holds more than `limit` bytes unsent
        for the client; returns how many it holds unsent then (over `limit`: the client is to be
        dropped), or None when they must go through ASGI's send instead (a compressed connection,
        or one mid-message).

        When nothing is queued before them (the usual case: a client that
        keeps up), they go straight into the socket, and when it takes them
        all nothing is left unsent: 0, without looking at the buffers again.
        Twisted's own write would register the socket for writability and
        unregister it once sent, two epoll_ctl calls and a loop pass per
        write: half of what a process spent serving 1,000 clients. What the
        socket does not take goes to the transport, and everything after it
        follows it there, in order."""
        protocol = self.protocol
        if not self.open():
            return 0  # closing: the client will not read them, and sendMessage would raise
        if protocol._perMessageCompress is not None or protocol.send_state != protocol.SEND_STATE_GROUND:
            return None
        transport = protocol.transport
        backlog = self.backlog()
        if backlog > limit:
            return backlog
        if not backlog and not protocol.send_queue and transport.connected and not transport.disconnecting:
            try:
                sent = transport.socket.send(frames)
            except OSError:  # full (EAGAIN), or broken: the transport's write finds out which
                sent = 0
            if sent == len(frames):
                return 0
            frames = frames[sent:]
        protocol.sendData(frames)  # autobahn's write: after anything it has queued
        return self.backlog()


def queued_backlog(send) -> int | None:
    """Bytes an in-process server (channels' WebsocketCommunicator in tests)
    holds in its output queue; None for a server that does not show it."""
    queue = getattr(send, "__self__", None)
    if isinstance(queue, asyncio.Queue):
        return sum(len(message.get("text") or message.get("bytes") or b"") for message in list(queue._queue))
    return None


def _not_a_json_number(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large for a JSON number")
    return value


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
    """Subscriptions to public channels, and delivery of the relay's batches.

    The consumer has no channel of its own: the process's hub
    (streaming/hub.py) is the only member of the relay's group, and hands each
    batch of a channel the consumer follows to `relay_batch`. A channel's
    events wait in `waiting` from the moment it is joined until `go_live`
    (after the accept, or after the snapshot), so that nothing reaches a
    client before what must precede it.
    """

    endpoint = ""
    # No channel layer alias of this name is configured, so channels opens no
    # channel (and no Redis subscription) per connection.
    channel_layer_alias = "hub-only"
    max_waiting_batches = 1000  # ~50 s of relay batches: a snapshot read never takes that long

    async def websocket_connect(self, message):
        self.accepted = False
        self.subscribed: dict[str, int] = {}  # channel -> seq of the last event sent
        self.waiting: dict[str, list[PreparedBatch]] = {}
        self.counted = False
        self.dropped = False
        self.daphne = DaphneSocket.behind(self.base_send)
        self.max_backlog = settings.WS_MAX_BACKLOG_BYTES
        await super().websocket_connect(message)

    def leaving(self) -> bool:
        """The connection is closing (or dropped as too slow, its close under way): what the client
        sent before its disconnect arrives is not served."""
        return self.dropped or (self.daphne is not None and not self.daphne.open())

    async def dispatch(self, message):
        if message["type"] == "websocket.receive" and self.leaving():
            return
        # Redis away while joining a channel or reading its snapshot: say so and close with a code of
        # our own, rather than the 1011 and traceback of an error left to the server.
        try:
            await super().dispatch(message)
        except REDIS_AWAY as error:
            await self.unavailable(error)

    async def unavailable(self, error: Exception, **request) -> None:
        """Redis did not answer: an error (with the `id` of the request it answers, if any), then 4503."""
        log.warning("WebSocket %s: Redis did not answer: %s", self.endpoint, error_text(error))
        if not self.accepted:
            await self.accept()
        await self.send(_error("service_unavailable", "Redis did not answer: connect again in a few seconds",
                               **request))
        await self.close(code=CLOSE_UNAVAILABLE)

    async def accept(self, subprotocol=None, headers=None):
        await super().accept(subprotocol, headers)
        self.accepted = True

    async def opened(self) -> None:
        await self.accept()
        metrics.WEBSOCKET_CONNECTIONS.labels(endpoint=self.endpoint).inc()
        self.counted = True
        if self.daphne is not None:
            self.daphne.opened()

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.forget()

    def forget(self) -> None:
        """Leave every channel and stop counting the connection. Run however the connection ends
        (a disconnect, an error, daphne cancelling the application): the hub must not keep
        writing to it, nor the gauge count it."""
        self.leave(list(getattr(self, "subscribed", ())))
        if getattr(self, "counted", False):
            metrics.WEBSOCKET_CONNECTIONS.labels(endpoint=self.endpoint).dec()
            self.counted = False

    async def join(self, channels: list[str]) -> None:
        for channel in channels:
            if channel not in self.subscribed:
                self.subscribed[channel] = 0
                self.waiting[channel] = []
                await hub().join(channel, self)

    def leave(self, channels: list[str]) -> None:
        for channel in channels:
            self.waiting.pop(channel, None)
            if self.subscribed.pop(channel, None) is not None:
                hub().leave(channel, self)

    async def go_live(self, channel: str, after_seq: int = 0) -> None:
        """Send what waited for the channel (events after `after_seq`), then its events as they come."""
        if channel not in self.subscribed:
            return
        self.subscribed[channel] = max(self.subscribed[channel], after_seq)
        waiting = self.waiting.get(channel)
        while waiting and not self.dropped:  # the hub appends here while a send below waits
            if (sending := self.write(channel, waiting.pop(0))) is not None:
                await sending
        self.waiting.pop(channel, None)

    async def refuse_unknown_symbol(self, symbol: str) -> None:
        await self.accept()
        await self.send(_error("unknown_symbol", f"unknown symbol {symbol[:40]!r}: GET /api/v1/symbols lists them"))
        await self.close(code=CLOSE_NOT_FOUND, reason="unknown symbol")

    # --- from the hub --------------------------------------------------------------------
    # Not coroutines: the hub calls these once per client per round, and under daphne they finish
    # without waiting. Only a write through ASGI send (another server, or a connection daphne's
    # fast path cannot take) hands the hub something to await.
    def relay_batch(self, channel: str, batch: PreparedBatch) -> Awaitable[None] | None:
        if self.dropped or channel not in self.subscribed:
            return None  # unsubscribed while this batch was in flight
        waiting = self.waiting.get(channel)
        if waiting is not None:
            if len(waiting) < self.max_waiting_batches:
                waiting.append(batch)
            else:
                self.drop_slow_client(sum(len(text) for queued in waiting for text in queued.texts))
            return None
        if self.daphne is None:
            # Another server's backlog is its output queue, which grows only as the client falls
            # behind: checked before each write.
            return None if self.drop_if_too_slow() else self.write(channel, batch)
        # Under daphne, write() sees the backlog as it writes: a client is dropped by the write that
        # takes it past the bound, in that round, or by the next one when its own messages (a
        # heartbeat, a reply) did.
        if (sending := self.write(channel, batch)) is not None:
            return self._then_drop_if_too_slow(sending)
        return None

    def drop_if_too_slow(self) -> bool:
        """Drop the client if the server holds more than `max_backlog` bytes unsent for it (where the
        server shows it); True when it is dropped."""
        if self.dropped:
            return True
        backlog = self.daphne.backlog() if self.daphne is not None else queued_backlog(self.base_send)
        if backlog is None or backlog <= self.max_backlog:
            return False
        self.drop_slow_client(backlog)
        return True

    async def _then_drop_if_too_slow(self, sending: Awaitable[None]) -> None:
        await sending
        self.drop_if_too_slow()

    def write(self, channel: str, batch: PreparedBatch) -> Awaitable[None] | None:
        """Write the batch's events the client has not had (at or below its seq: covered by the
        snapshot); an awaitable when they must go through ASGI send. Under daphne, a client the
        server holds more than `max_backlog` bytes unsent for, before or after the write, is dropped."""
        start = batch.start_after(self.subscribed.get(channel, 0))
        if start >= len(batch):
            return None
        if self.daphne is not None and (unsent := self.daphne.write(batch.frames_from(start), self.max_backlog)) \
                is not None:
            if unsent <= self.max_backlog:
                self._sent(channel, batch)
            elif not self.dropped:
                self.drop_slow_client(unsent)
            return None
        return self._send_texts(channel, batch, start)

    async def _send_texts(self, channel: str, batch: PreparedBatch, start: int) -> None:
        for text in batch.texts[start:]:
            await self.send(text)
        self._sent(channel, batch)

    def _sent(self, channel: str, batch: PreparedBatch) -> None:
        """The client has had the batch: its next one starts after it (unless it left the channel meanwhile,
        or a snapshot sent while the batch was written through ASGI's send is newer)."""
        if channel in self.subscribed:
            self.subscribed[channel] = max(self.subscribed[channel], batch.last_seq)

    def drop_slow_client(self, backlog: int) -> None:
        """Called from the hub's fan-out, which must not wait: the close runs as a task of its own."""
        self.dropped = True
        metrics.WEBSOCKET_DROPPED_CLIENTS.labels(endpoint=self.endpoint).inc()
        log.info("dropping a slow WebSocket client of %s: %d bytes unsent", self.endpoint, backlog)
        self.closing = asyncio.ensure_future(self._close_too_slow())

    async def receive(self, text_data=None, bytes_data=None):
        """The single-channel endpoints only send: what a client sends them is ignored, within the size
        every endpoint allows."""
        await self.refused_as_too_big(text_data, bytes_data)

    async def refused_as_too_big(self, text_data, bytes_data) -> bool:
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size <= settings.WS_MAX_MESSAGE_BYTES:
            return False
        await self.send(_error("message_too_big", f"messages are at most {settings.WS_MAX_MESSAGE_BYTES} bytes"))
        await self.close(code=CLOSE_MESSAGE_TOO_BIG)
        return True

    async def _close_too_slow(self) -> None:
        self.leave(list(self.subscribed))
        await self.close(code=CLOSE_TOO_SLOW, reason="too slow: reconnect and take a snapshot")


class _SymbolStreamConsumer(_ChannelsConsumer):
    kind = ""

    async def connect(self):
        symbol = symbol_upper(self.scope["url_route"]["kwargs"]["symbol"])
        if not await _known_symbols({symbol}):
            await self.refuse_unknown_symbol(symbol)
            return
        # Join first: an event relayed once the client sees the accept reaches it.
        channel = f"{self.kind}.{symbol}"
        await self.join([channel])
        await self.opened()
        await self.go_live(channel)


class QuoteStreamConsumer(_SymbolStreamConsumer):
    """/ws/quotes/{symbol}: the symbol's quotes (conflated to the newest per relay batch)."""

    endpoint = "quotes"
    kind = "quotes"


class TradeStreamConsumer(_SymbolStreamConsumer):
    """/ws/trades/{symbol}: every trade of the symbol."""

    endpoint = "trades"
    kind = "trades"


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Any other path: told so, and closed with 4404 (an unrouted path would fail the handshake with a 500)."""

    channel_layer_alias = _ChannelsConsumer.channel_layer_alias  # no channel, no Redis subscription

    async def connect(self):
        await self.accept()
        await self.send(_error("not_found", f"no WebSocket endpoint at {self.scope['path'][:80]!r}: the endpoints "
                                            "are /ws/quotes/{symbol}, /ws/trades/{symbol}, /ws/alerts, /ws/stream"))
        await self.close(code=CLOSE_NOT_FOUND)


class AlertStreamConsumer(_ChannelsConsumer):
    """/ws/alerts: every alert."""

    endpoint = "alerts"

    async def connect(self):
        await self.join([ALERTS_CHANNEL])
        await self.opened()
        await self.go_live(ALERTS_CHANNEL)


class MultiplexStreamConsumer(_ChannelsConsumer):
    """/ws/stream: one connection, many channels.

    Client → server: {"action": "subscribe" | "unsubscribe", "channels": [...], "id": any}
    Server → client: {"type": "subscribed" | "unsubscribed", "channels": [...], "id": ...};
    one {"type": "snapshot", "channel", "seq", "event", "data"} per
    subscribed channel (again for one already followed: after a gap), then
    its events with seq > the snapshot's;
    {"type": "heartbeat", "time", "seqs": {channel: last seq sent}} every
    WS_HEARTBEAT_SECONDS; {"type": "error", "code", "message", "id"} for a bad
    request (nothing of a refused request is applied).
    """

    endpoint = "stream"

    async def connect(self):
        rate = settings.WS_MAX_SUBSCRIBES_PER_SECOND
        # At once: a subscribe to as many channels as a connection may hold, whatever the rate.
        self.budget = TokenBucket(rate=rate, burst=max(2 * rate, settings.WS_MAX_SUBSCRIPTIONS), now=time.monotonic())
        await self.opened()
        self.heartbeat_task = asyncio.ensure_future(self.heartbeats())

    def forget(self) -> None:
        # Here, not in disconnect(): when daphne cancels the application of a connection that took too long
        # to close, disconnect() never runs, and a heartbeat loop left running kept the consumer (and its
        # connection) alive for good.
        task = getattr(self, "heartbeat_task", None)
        if task is not None:
            task.cancel()
        super().forget()

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(settings.WS_HEARTBEAT_SECONDS)
            if self.leaving():
                return
            await self.send(json.dumps({"type": "heartbeat", "time": datetime.now(UTC).isoformat().replace(
                "+00:00", "Z"), "seqs": dict(self.subscribed)}))

    async def receive(self, text_data=None, bytes_data=None):
        if await self.refused_as_too_big(text_data, bytes_data):
            return
        if bytes_data is not None or text_data is None:
            await self.send(_error("bad_request", 'send JSON text frames: {"action": "subscribe", "channels": [...]}'))
            return
        try:
            # NaN, Infinity and 1e999 are refused: an "id" is echoed, and JSON has no such numbers.
            request = json.loads(text_data, parse_constant=_not_a_json_number, parse_float=_finite_float)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            await self.send(_error("bad_request", "not JSON (nor are NaN, Infinity and numbers past a float's range): "
                                                  'send {"action": "subscribe", "channels": [...]}'))
            return
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
        try:
            channels = list({channel.name: channel for channel in map(channel_parse, names)}.values())
        except BadChannel as error:
            await self.send(_error("bad_channel", str(error), id=request_id))
            return
        if len(channels) > settings.WS_MAX_SUBSCRIPTIONS:
            await self.send(_error("too_many_subscriptions",
                                   f"at most {settings.WS_MAX_SUBSCRIPTIONS} channels per connection", id=request_id))
            return
        # A channel subscribed costs a snapshot read: one client re-subscribing to every channel every few
        # milliseconds took a core. An unsubscribe costs one, as any request.
        if not self.budget.take(len(channels) if action == "subscribe" else 1, now=time.monotonic()):
            await self.send(_error("rate_limited", f"over {settings.WS_MAX_SUBSCRIBES_PER_SECOND} channels "
                                                   "subscribed a second (an unsubscribe counts one): nothing was "
                                                   "done, try again in a second", id=request_id))
            return
        if action == "unsubscribe":
            self.leave([channel.name for channel in channels])
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
        # waits in `waiting` and is sent after them (if it is newer). A channel
        # subscribed again (after a gap) waits likewise for a fresh snapshot.
        # Every snapshot is read before the reply: a subscription Redis cannot
        # serve is refused whole.
        try:
            await self.join([channel.name for channel in new])
            for channel in channels:
                self.waiting.setdefault(channel.name, [])
            snapshots = [await self.snapshot(channel) for channel in channels]
        except REDIS_AWAY as error:
            self.leave(list(self.subscribed))  # the connection closes: no channel waits for a snapshot
            await self.unavailable(error, id=request_id)
            return
        await self.send(json.dumps({"type": "subscribed", "channels": [c.name for c in channels], "id": request_id}))
        for channel, (seq, event, data) in zip(channels, snapshots):
            if channel.name not in self.subscribed:
                continue  # unsubscribed while its snapshot was read
            await self.send(f'{{"type":"snapshot","channel":"{channel.name}","seq":{seq},'
                            f'"event":{json.dumps(event)},"data":{data}}}')
            await self.go_live(channel.name, after_seq=seq)

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
