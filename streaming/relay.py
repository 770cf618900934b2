"""`relay_streams`: Kafka events to WebSocket clients, through Channels groups.

A pipeline on the shared runner (streaming/runner.py) with its own consumer
group. Per batch it:

1. groups the events by public channel (streaming/groups.py) and conflates
   what only needs its newest state: per symbol the latest quote, per candle
   bucket its latest update (`relay_batches`, pure);
2. numbers each channel's events with one HINCRBY per channel in one Redis
   round trip: the counters live in Redis, so a restarted relay (or a second
   web process) continues the sequence and a client sees a gap as a jump;
3. keeps each channel's newest event, with its number, as the channel's
   snapshot (what /ws/stream sends on subscribe);
4. sends ONE group_send per channel per batch, carrying the batch's events
   as ready-made JSON text. Each web process's hub (streaming/hub.py) is the
   group's one member there: it turns them into WebSocket frames once and
   writes those to each of its clients.

store() writes nothing: the runner still stores the offsets in its
transaction, so the relay resumes where it stopped. Delivery to clients is
at-most-once (a crash between the offsets' commit and the sends loses that
batch for live clients); sequence numbers and snapshots let a client notice
and recover.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable

from channels.layers import get_channel_layer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streaming import metrics
from streaming.groups import ALERTS_CHANNEL, candles_channel, group_for, quotes_channel, trades_channel
from streaming.redis import redis_client
from streaming.runner import Events
from streaming.schemas import encode
from streaming.topics import ALERTS, CANDLES, QUOTES, TRADES

log = logging.getLogger(__name__)

CHANNEL_KEY = "finstream:ws:{}"  # hash: seq (last number issued), last_seq + last (the newest event's envelope)
MESSAGE_TYPE = "stream.batch"  # read by FanoutHub in streaming/hub.py
EVENT_TYPES = {TRADES: "trade", QUOTES: "quote", CANDLES: "candle", ALERTS: "alert"}

_SET_LAST_IF_NEWER = """
local current = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '0')
if current < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'last_seq', ARGV[1], 'last', ARGV[2])
end
return 0
"""


def relay_batches(events: Events) -> dict[str, list[tuple[str, bytes]]]:
    """Events grouped by channel, in order, as (event type, message JSON).

    Quotes are conflated to the newest per symbol and candle updates to the
    newest per bucket (each carries the bucket's full state): a client wants
    the book and the candle as they are now, not every step in between.
    Trades and alerts are never conflated.
    """
    batches: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    for trade in events.get(TRADES, ()):
        batches[trades_channel(trade.symbol)].append(("trade", encode(trade)))
    newest_quote = {}
    for quote in events.get(QUOTES, ()):
        current = newest_quote.get(quote.symbol)
        if current is None or quote.ts >= current.ts:
            newest_quote[quote.symbol] = quote
    for symbol, quote in newest_quote.items():
        batches[quotes_channel(symbol)].append(("quote", encode(quote)))
    newest_candle = {}
    for candle in events.get(CANDLES, ()):  # partition order: a later message is a later state
        newest_candle[(candle.symbol, candle.interval, candle.start)] = candle
    for (symbol, interval, _start), candle in sorted(newest_candle.items(), key=lambda item: item[0][2]):
        batches[candles_channel(interval, symbol)].append(("candle", encode(candle)))
    for alert in events.get(ALERTS, ()):
        batches[ALERTS_CHANNEL].append(("alert", encode(alert)))
    return dict(batches)


def envelope(*, type: str, channel: str, seq: int, data: bytes) -> str:
    """The JSON text a client receives for one event (docs/api.md)."""
    return f'{{"type":"{type}","channel":"{channel}","seq":{seq},"data":{data.decode()}}}'


def events_count(events: Events) -> int:
    return sum(len(values) for values in events.values())


class RelayPipeline:
    """See the module docstring. `per_event=True` sends one group_send per
    event instead of per channel and batch (`relay_streams --per-event`): only
    for bench/websocket_fanout.py, which measures what batching buys."""

    name = "relay_streams"
    topics = (TRADES, QUOTES, CANDLES, ALERTS)

    def __init__(self, *, layer=None, per_event: bool = False, redis_retries: int = 5) -> None:
        self.layer = layer if layer is not None else get_channel_layer()
        self.per_event = per_event
        self.redis_retries = redis_retries
        # One loop for the life of the relay: channel layers keep their Redis
        # connections per event loop.
        self._loop = asyncio.new_event_loop()
        self._set_last = None

    def prepare(self, events: Events) -> None:
        pass

    def store(self, events: Events) -> Events:
        return events  # nothing to write; the runner stores the offsets

    def after_commit(self, events: Events) -> None:
        batches = relay_batches(events)
        if not batches:
            return
        numbered = self._with_retries(lambda: self._number(batches))
        sends = self._loop.run_until_complete(self._send(numbered))
        metrics.RELAY_GROUP_SENDS.inc(sends)
        relayed = sum(len(items) for items in batches.values())
        metrics.RELAY_EVENTS.labels(outcome="sent").inc(relayed)
        metrics.RELAY_EVENTS.labels(outcome="conflated").inc(events_count(events) - relayed)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.close()  # channels_redis closes its connections with the loop

    # --- steps ---------------------------------------------------------------------------
    def _number(self, batches: dict[str, list[tuple[str, bytes]]]) -> dict[str, list[tuple[int, str]]]:
        client = redis_client()
        channels = list(batches)
        pipe = client.pipeline(transaction=False)
        for channel in channels:
            pipe.hincrby(CHANNEL_KEY.format(channel), "seq", len(batches[channel]))
        last_numbers = pipe.execute()
        numbered: dict[str, list[tuple[int, str]]] = {}
        if self._set_last is None:
            self._set_last = client.register_script(_SET_LAST_IF_NEWER)
        pipe = client.pipeline(transaction=False)
        for channel, last in zip(channels, last_numbers):
            items = batches[channel]
            first = last - len(items) + 1
            numbered[channel] = [
                (first + index, envelope(type=kind, channel=channel, seq=first + index, data=data))
                for index, (kind, data) in enumerate(items)
            ]
            self._set_last(keys=[CHANNEL_KEY.format(channel)], args=[last, numbered[channel][-1][1]], client=pipe)
        pipe.execute()
        return numbered

    async def _send(self, numbered: dict[str, list[tuple[int, str]]]) -> int:
        sends = []
        for channel, items in numbered.items():
            group = group_for(channel)
            chunks: Iterable[list] = ([item] for item in items) if self.per_event else [items]
            for chunk in chunks:
                sends.append(self.layer.group_send(
                    group, {"type": MESSAGE_TYPE, "channel": channel, "events": [list(item) for item in chunk]}
                ))
        await asyncio.gather(*sends)
        return len(sends)

    def _with_retries(self, action):
        """Redis away: retry with bounded back-off, then raise (the supervisor
        restarts the relay; clients see the gap in the sequence numbers)."""
        delay = 0.25
        for attempt in range(1, self.redis_retries + 1):
            try:
                return action()
            except (RedisConnectionError, RedisTimeoutError) as error:
                if attempt == self.redis_retries:
                    raise
                log.warning("relay: Redis unavailable (attempt %d/%d): %s", attempt, self.redis_retries, error)
                time.sleep(delay)
                delay = min(delay * 2, 4.0)
        raise AssertionError("unreachable")
