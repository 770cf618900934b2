"""The fan-out hub: one per web process (per event loop), the process's only
member of FANOUT_GROUP, the Channels group the relay sends each batch to.

The relay sends each batch once, every channel's events in one message
(streaming/relay.py). Were every client a member of a Channels group itself,
each would get its own copy through the channel layer, and each copy costs a
queue, a task wake-up and a dispatch: ~50-100 µs, so one process could not
serve more than ~10k deliveries a second. Instead the hub takes the one copy
its process receives, keeps the channels its clients follow, prepares each
once (streaming/ws_frames.py) and hands it to each local subscriber in turn,
in the same task: a subscriber writes it to its socket without awaiting
anything (streaming/consumers.py), so the whole fan-out of a batch runs
without yielding to the event loop.

The hub reads and writes in two tasks. The reader only collects what the
relay sends; the fan-out takes everything collected since its last round,
each channel's events joined in order, and writes it to each client in one
write. While the process keeps up, that is one relay batch. When it falls
behind (a burst, or the machine's cores busy elsewhere), several batches of a
channel go out together: the socket writes, most of the process's work, stay
one per client per round instead of one per client per batch, so the process
catches up instead of serving ever staler batches. What has been collected
is bounded (`max_pending_events`): past it, batches are dropped, and clients
see the gap in their sequence numbers.

The hub joins the group when the process's first subscriber joins, and
leaves it, stopping its reader (and closing the pub/sub layer's connection),
when the last one has left. Joins are
serialised, so a subscriber that has joined is followed: a relay batch sent
after `join` returns reaches it. Only the process's first join waits on
Redis; leaving never does (a client that goes away, however it goes, must
not stay behind because Redis did not answer): the group is left by a
clean-up task. With RedisChannelLayer, whose memberships expire, the hub
renews its own while it reads.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable
from typing import Protocol

from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer

from finstream.logs import error_text
from streaming.groups import FANOUT_GROUP
from streaming.relay import MESSAGE_TYPE
from streaming.ws_frames import PreparedBatch

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    def relay_batch(self, channel: str, batch: PreparedBatch) -> Awaitable[None] | None:
        """Deliver a batch: at once, or by the awaitable it returns. Must not wait on the client:
        the whole process's fan-out waits with it."""


class FanoutHub:
    # Events collected and not yet written: ~5 s of 10k trades/s. Further behind than that, a
    # client is better served by a gap it can see (and a snapshot) than by a late backlog.
    max_pending_events = 50_000

    def __init__(self, layer) -> None:
        self.layer = layer
        self.members: dict[str, set[Subscriber]] = {}
        self._lock = asyncio.Lock()
        self._channel_name: str | None = None
        self._reader: asyncio.Task | None = None
        self._renewer: asyncio.Task | None = None
        self._fan_out_task: asyncio.Task | None = None
        self._pending: dict[str, list[PreparedBatch]] = {}  # channel -> batches collected since the last round
        self._pending_events = 0
        self._arrived = asyncio.Event()
        self._cleanups: set[asyncio.Task] = set()

    async def join(self, channel: str, subscriber: Subscriber) -> None:
        async with self._lock:
            if self._reader is None or self._reader.done():
                await self._start()
            if self._fan_out_task is None or self._fan_out_task.done():
                self._fan_out_task = asyncio.ensure_future(self._fan_out())
            self.members.setdefault(channel, set()).add(subscriber)

    def leave(self, channel: str, subscriber: Subscriber) -> None:
        members = self.members.get(channel)
        if members is None or subscriber not in members:
            return
        members.discard(subscriber)
        if not members:
            del self.members[channel]
            if not self.members:
                self._in_background(self._clean_up(), "the clean-up")

    async def deliver(self, channel: str, batch: PreparedBatch) -> None:
        for subscriber in tuple(self.members.get(channel, ())):
            try:
                if (sending := subscriber.relay_batch(channel, batch)) is not None:
                    await sending
            except Exception:
                log.exception("WebSocket hub: delivery to one client of %s failed", channel)

    @property
    def reading(self) -> bool:
        """In the group, reading: from the first join until the clean-up after the last leave."""
        return self._reader is not None

    @property
    def waiting_events(self) -> int:
        """Events collected for the next round."""
        return self._pending_events

    # --- inside ------------------------------------------------------------------------
    async def _start(self) -> None:
        """Join the group on a channel of the hub's own, and read it (under the lock)."""
        channel_name = await self.layer.new_channel(prefix="hub.")
        # Reading before joining: a member of the group that nobody reads would queue every batch
        # for the life of the process.
        reader = asyncio.ensure_future(self._read(channel_name))
        try:
            await asyncio.sleep(0)  # the reader is in receive(): cancelled, it lets the layer drop the channel
            await self.layer.group_add(FANOUT_GROUP, channel_name)
        except BaseException:  # Redis away, or the joining client gone (cancelled): leave nothing behind
            reader.cancel()
            self._in_background(self.layer.group_discard(FANOUT_GROUP, channel_name), "leaving after a failed join")
            raise
        self._channel_name, self._reader = channel_name, reader
        expiry = getattr(self.layer, "group_expiry", None)
        if expiry:
            if self._renewer is not None:
                self._renewer.cancel()
            self._renewer = asyncio.ensure_future(self._renew(channel_name, expiry / 4))

    def _in_background(self, work, what: str) -> None:
        """Run `work` without waiting for it; a failure is logged."""
        task = asyncio.ensure_future(work)
        self._cleanups.add(task)

        def finished(task: asyncio.Task) -> None:
            self._cleanups.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.warning("WebSocket hub: %s failed: %s", what, error_text(task.exception()))

        task.add_done_callback(finished)

    async def _clean_up(self) -> None:
        """Nobody left (checked again under the lock: a join may have come since): stop reading, leave."""
        async with self._lock:
            if self.members or self._reader is None:
                return
            channel_name = self._channel_name
            tasks = [task for task in (self._reader, self._fan_out_task, self._renewer) if task is not None]
            self._reader = self._fan_out_task = self._renewer = self._channel_name = None
            self._pending, self._pending_events = {}, 0
            for task in tasks:
                task.cancel()  # the layer's receive() unsubscribes the channel when cancelled
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await self.layer.group_discard(FANOUT_GROUP, channel_name)
            except Exception:  # a member nobody reads: RedisChannelLayer expires it, pubsub sends it nothing
                log.warning("WebSocket hub: could not leave %s", FANOUT_GROUP, exc_info=True)
            if isinstance(self.layer, RedisPubSubChannelLayer):
                # Close the pub/sub connection rather than keep it idle (the hub is the layer's only
                # user here). Redis restarting drops an idle one unseen, and the next join's SUBSCRIBE
                # on it failed: 4503 though Redis answered, or a 500 (redis-py reconnecting under the
                # layer's reader). The next join opens a new one.
                try:
                    await self.layer.flush()
                except Exception:
                    log.warning("WebSocket hub: could not close its Redis connection", exc_info=True)

    async def _read(self, channel_name: str) -> None:
        failures = 0
        while True:
            try:
                message = await self.layer.receive(channel_name)
                failures = 0
                if message.get("type") == MESSAGE_TYPE:
                    self._collect(message.get("channels"))
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis away, or a message not from the relay: clients see gaps in their sequence numbers.
                failures += 1
                log.exception("WebSocket hub: receiving failed (%d in a row)", failures)
                await asyncio.sleep(min(0.25 * 2 ** failures, 5.0))

    def _collect(self, channels: object) -> None:
        """Keep the batches of the channels someone here follows."""
        if not isinstance(channels, dict):
            log.warning("WebSocket hub: a relay message without channels skipped")
            return
        for channel, events in channels.items():
            if channel not in self.members:
                continue
            try:
                batch = PreparedBatch(events)
            except ValueError as error:  # not from the relay: skipped, the others go on
                log.warning("WebSocket hub: a malformed batch of %s skipped: %s", channel, error)
                continue
            if not batch:
                continue
            if self._pending_events + len(batch) > self.max_pending_events:
                log.warning("WebSocket hub: %d events waiting to be written; dropping a batch of %s",
                            self._pending_events, channel)
                continue
            self._pending.setdefault(channel, []).append(batch)
            self._pending_events += len(batch)
            self._arrived.set()

    async def _fan_out(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            pending, self._pending, self._pending_events = self._pending, {}, 0
            for channel, batches in pending.items():
                try:
                    await self.deliver(channel, PreparedBatch.joined(batches))
                except Exception:  # the next round must still run
                    log.exception("WebSocket hub: a round of %s failed", channel)

    async def _renew(self, channel_name: str, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.layer.group_add(FANOUT_GROUP, channel_name)
            except Exception:
                log.warning("WebSocket hub: could not renew its membership of %s", FANOUT_GROUP, exc_info=True)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FanoutHub] = weakref.WeakKeyDictionary()


def hub() -> FanoutHub:
    """This event loop's hub (a web process runs one loop)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = FanoutHub(get_channel_layer())
    return found
