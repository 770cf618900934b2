"""`relay_streams`: Kafka events to WebSocket clients, through a Channels group.

A pipeline on the shared runner (streaming/runner.py) with its own consumer
group. Per batch it:

1. groups the events by public channel (streaming/groups.py) and conflates
   what only needs its newest state: per symbol the latest quote, per candle
   bucket its latest update (`relay_batches`, pure);
2. numbers each channel's events and keeps its newest one by event time
   (a candle: its newest bucket) as the channel's snapshot (what /ws/stream
   sends on subscribe), all in one Redis script call: the counters live in
   Redis, so a restarted relay continues the sequence and a client sees a gap
   as a jump; a late print, or last week's file replayed beside the live feed,
   is relayed but never becomes the snapshot;
3. sends the whole batch, every channel's events as ready-made JSON text, in
   ONE group_send to FANOUT_GROUP (several for a batch of more than
   MESSAGE_MAX_EVENTS). Each web process's hub (streaming/hub.py) is that
   group's one member there: it takes the channels its clients follow, turns
   their events into WebSocket frames once and writes those to each of its
   clients.

The broker gathers each batch, as for every consumer on the runner: it holds
the relay's fetches for RELAY_BATCH_WAIT_MS.

One message per batch, not one per channel: the relay makes one Redis round
trip for the batch instead of one per channel (two per symbol for trades and
quotes, six more with candles), and a hub receives a batch whole, so it writes
each client once per batch. Every hub receives every channel and skips what
its clients do not follow. The relay and the web processes must run the same
version: until 2026-11-26 the relay sent one message per channel, to a group
per channel.

store() publishes, and the runner then stores the offsets in its
transaction (the relay writes nothing else to PostgreSQL), so the relay
resumes where it stopped. Publishing first keeps PostgreSQL's round trips
(and, with fsync on, a WAL flush that can queue behind the store consumers'
batches) out of every event's way to the clients: the next fetch is already
on its way while the offsets are written. Delivery is at-least-once: a crash
between the sends and the offsets' commit sends that batch again after the
restart, under new sequence numbers (the events keep their ids). Before
2026-11-27 the relay published after the commit, and such a crash lost the
batch without a jump in the numbers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from channels.layers import get_channel_layer

from streaming import metrics
from streaming.groups import ALERTS_CHANNEL, FANOUT_GROUP, candles_channel, quotes_channel, trades_channel
from streaming.redis import REDIS_AWAY, redis_client
from streaming.runner import Events
from streaming.schemas import encode
from streaming.topics import ALERTS, CANDLES, QUOTES, TRADES
from streaming.wire import epoch_us

log = logging.getLogger(__name__)

# hash: seq (last number issued), last_seq (the number the snapshot stands at), last (the envelope of the
# newest event by event time) and last_time (its time, epoch microseconds)
CHANNEL_KEY = "finstream:ws:{}"
MESSAGE_TYPE = "stream.batch"  # {"type", "channels": {channel: [[seq, envelope JSON], ...]}}, read by streaming/hub.py
# Events in one relay message. A batch taken while catching up (CONSUMER_BATCH_SIZE, up to 100,000
# events) goes out as several messages, each far below what Redis lets a pub/sub subscriber fall
# behind by before it cuts it off (client-output-buffer-limit pubsub, 32 MB by default).
MESSAGE_MAX_EVENTS = 2000
# How far ahead of the relay's clock an event may be and still become its channel's snapshot: the broker
# refuses messages an hour ahead of its own clock; a feed's clock may run a little fast.
SNAPSHOT_HORIZON = timedelta(hours=1)

# KEYS: the channels' hashes. ARGV: the latest event time a snapshot may have (epoch microseconds), then
# per key its event count and, of its newest event by event time, the time, how many events follow it in
# the batch, and its envelope before and after the seq. Returns each channel's last number. One script, so
# that numbering and the snapshot are one atomic step: two relays during a rebalance cannot leave a
# snapshot behind its number. The snapshot stands at the channel's last number whichever event it shows:
# a client takes the events after it. An event dated past the horizon (a trade of 2100 published by hand)
# is relayed but never kept, and one kept before such a horizon gives way: it would pin the snapshot.
_NUMBER_AND_KEEP_NEWEST = """
local horizon = tonumber(ARGV[1])
local numbers = {}
for i, key in ipairs(KEYS) do
  local at = 5 * i - 3
  local last = redis.call('HINCRBY', key, 'seq', ARGV[at])
  local time = tonumber(ARGV[at + 1])
  local kept = tonumber(redis.call('HGET', key, 'last_time'))
  if time <= horizon and (kept == nil or time >= kept or kept > horizon) then
    local own = last - tonumber(ARGV[at + 2])
    redis.call('HSET', key, 'last', ARGV[at + 3] .. string.format('%d', own) .. ARGV[at + 4],
               'last_time', ARGV[at + 1])
  end
  redis.call('HSET', key, 'last_seq', last)
  numbers[i] = last
end
return numbers
"""


def relay_batches(events: Events) -> dict[str, list[tuple[str, bytes, int]]]:
    """Events grouped by channel, in order, as (event type, message JSON, event time in epoch µs; a
    candle's: its bucket's start).

    Quotes are conflated to the newest per symbol and candle updates to the
    newest per bucket (each carries the bucket's full state): a client wants
    the book and the candle as they are now, not every step in between.
    Trades and alerts are never conflated.
    """
    batches: dict[str, list[tuple[str, bytes, int]]] = defaultdict(list)
    for trade in events.get(TRADES, ()):
        batches[trades_channel(trade.symbol)].append(("trade", encode(trade), epoch_us(trade.ts)))
    newest_quote = {}
    for quote in events.get(QUOTES, ()):
        current = newest_quote.get(quote.symbol)
        if current is None or quote.ts >= current.ts:
            newest_quote[quote.symbol] = quote
    for symbol, quote in newest_quote.items():
        batches[quotes_channel(symbol)].append(("quote", encode(quote), epoch_us(quote.ts)))
    newest_candle = {}
    for candle in events.get(CANDLES, ()):  # partition order: a later message is a later state
        newest_candle[(candle.symbol, candle.interval, candle.start)] = candle
    for (symbol, interval, start), candle in sorted(newest_candle.items(), key=lambda item: item[0][2]):
        batches[candles_channel(interval, symbol)].append(("candle", encode(candle), epoch_us(start)))
    for alert in events.get(ALERTS, ()):
        batches[ALERTS_CHANNEL].append(("alert", encode(alert), epoch_us(alert.ts)))
    return dict(batches)


def newest_by_time(items: list[tuple[str, bytes, int]]) -> int:
    """The index of the item with the latest event time; of several, the last to come."""
    newest = 0
    for index, item in enumerate(items):
        if item[2] >= items[newest][2]:
            newest = index
    return newest


def envelope_around_seq(*, type: str, channel: str, data: bytes) -> tuple[str, str]:
    """The JSON text a client receives for one event (docs/api.md), before and after its seq."""
    return f'{{"type":"{type}","channel":"{channel}","seq":', f',"data":{data.decode()}}}'


def relay_messages(numbered: dict[str, list], max_events: int) -> list[dict[str, list]]:
    """A numbered batch as the `channels` of relay messages of at most `max_events` events each:
    sent in order, they carry every channel's events in order."""
    messages: list[dict[str, list]] = []
    current: dict[str, list] = {}
    size = 0
    for channel, items in numbered.items():
        start = 0
        while start < len(items):
            take = min(len(items) - start, max_events - size)
            current[channel] = items[start:start + take]
            start, size = start + take, size + take
            if size == max_events:
                messages.append(current)
                current, size = {}, 0
    if current:
        messages.append(current)
    return messages


def events_count(events: Events) -> int:
    return sum(len(values) for values in events.values())


class RelayPipeline:
    """See the module docstring. `per_event=True` sends one group_send per
    event instead of one per batch (`relay_streams --per-event`): only for
    bench/websocket_fanout.py, which measures what batching buys."""

    name = "relay_streams"
    topics = (TRADES, QUOTES, CANDLES, ALERTS)
    requires_redis = True  # the channel layer

    def __init__(self, *, layer=None, per_event: bool = False, redis_retries: int = 5) -> None:
        self.layer = layer if layer is not None else get_channel_layer()
        self.per_event = per_event
        self.redis_retries = redis_retries
        # One loop for the life of the relay: channel layers keep their Redis
        # connections per event loop.
        self._loop = asyncio.new_event_loop()
        self._number_script = None
        self._published: Events | None = None

    def prepare(self, events: Events) -> None:
        pass

    def store(self, events: Events) -> None:
        # The runner calls store() again for the same batch when PostgreSQL fails mid-transaction:
        # the clients have it already.
        if events is not self._published:
            self.publish(events)
            self._published = events

    def after_commit(self, result: None) -> None:
        pass

    def publish(self, events: Events) -> None:
        batches = relay_batches(events)
        if not batches:
            return
        numbered = self._with_retries(lambda: self._number(batches))
        sends = self._send(numbered)
        metrics.RELAY_GROUP_SENDS.inc(sends)
        relayed = sum(len(items) for items in batches.values())
        metrics.RELAY_EVENTS.labels(outcome="sent").inc(relayed)
        metrics.RELAY_EVENTS.labels(outcome="conflated").inc(events_count(events) - relayed)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.close()  # channels_redis closes its connections with the loop

    # --- steps ---------------------------------------------------------------------------
    def _number(self, batches: dict[str, list[tuple[str, bytes, int]]]) -> dict[str, list[tuple[int, str]]]:
        if self._number_script is None:
            self._number_script = redis_client().register_script(_NUMBER_AND_KEEP_NEWEST)
        channels = list(batches)
        envelopes: dict[str, list[tuple[str, str]]] = {}
        args: list[object] = [epoch_us(datetime.now(UTC) + SNAPSHOT_HORIZON)]
        for channel in channels:
            items = batches[channel]
            envelopes[channel] = [envelope_around_seq(type=kind, channel=channel, data=data)
                                  for kind, data, _time in items]
            newest = newest_by_time(items)
            args += [len(items), items[newest][2], len(items) - 1 - newest, *envelopes[channel][newest]]
        last_numbers = self._number_script(keys=[CHANNEL_KEY.format(channel) for channel in channels], args=args)
        numbered: dict[str, list[tuple[int, str]]] = {}
        for channel, last in zip(channels, last_numbers):
            first = last - len(envelopes[channel]) + 1
            numbered[channel] = [(first + index, f"{before}{first + index}{after}")
                                 for index, (before, after) in enumerate(envelopes[channel])]
        return numbered

    def _send(self, numbered: dict[str, list[tuple[int, str]]]) -> int:
        """One group_send per message, in order: a channel's events may span two. Redis away (a
        restart drops the layer's connection), the sends resume from the one that failed."""
        messages = relay_messages(numbered, 1 if self.per_event else MESSAGE_MAX_EVENTS)
        sent = 0

        async def send_the_rest() -> None:
            nonlocal sent
            while sent < len(messages):
                await self.layer.group_send(FANOUT_GROUP, {"type": MESSAGE_TYPE, "channels": messages[sent]})
                sent += 1

        self._with_retries(lambda: self._loop.run_until_complete(send_the_rest()))
        return len(messages)

    def _with_retries(self, action):
        """Redis away: retry with bounded back-off, then raise. The batch's offsets are not written, so
        the restarted relay sends it again (with a jump in the numbers if they were taken before)."""
        delay = 0.25
        for attempt in range(1, self.redis_retries + 1):
            try:
                return action()
            except REDIS_AWAY as error:
                if attempt == self.redis_retries:
                    raise
                log.warning("relay: Redis unavailable (attempt %d/%d): %s", attempt, self.redis_retries, error)
                time.sleep(delay)
                delay = min(delay * 2, 4.0)
        raise AssertionError("unreachable")
