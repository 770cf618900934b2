"""The fan-out hub: one per web process (per event loop), the process's only
member of the Channels groups its WebSocket clients follow.

The relay sends one group message per channel and batch (streaming/relay.py).
Were every client a member of the group itself, each would get its own copy
through the channel layer, and each copy costs a queue, a task wake-up and a
dispatch: ~50-100 µs, so one process could not serve more than ~10k
deliveries a second. Instead the hub takes the one copy its process receives,
prepares it once (streaming/ws_frames.py) and hands it to each local
subscriber in turn, in the same task: a subscriber writes it to its socket
without awaiting anything (streaming/consumers.py), so the whole fan-out of
a batch runs without yielding to the event loop.

The hub joins a group when its first local subscriber does. Joins are
serialised, so a subscriber that has joined is a member of the group: a relay
batch sent after `join` returns reaches it. Leaving awaits nothing (a client
that goes away, however it goes, must not stay behind because Redis did not
answer): the group is left, and the reader stopped when nobody is left, by a
clean-up task. With RedisChannelLayer, whose memberships expire, the hub
renews its own while it reads.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

from channels.layers import get_channel_layer

from streaming.groups import group_for
from streaming.relay import MESSAGE_TYPE
from streaming.ws_frames import PreparedBatch

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    async def relay_batch(self, channel: str, batch: PreparedBatch) -> None:
        """Deliver a batch. Must not wait on the client: the whole process's fan-out waits with it."""


class FanoutHub:
    def __init__(self, layer) -> None:
        self.layer = layer
        self.members: dict[str, set[Subscriber]] = {}
        self._lock = asyncio.Lock()
        self._channel_name: str | None = None
        self._reader: asyncio.Task | None = None
        self._renewer: asyncio.Task | None = None
        self._cleanups: set[asyncio.Task] = set()

    async def join(self, channel: str, subscriber: Subscriber) -> None:
        async with self._lock:
            if self._reader is None or self._reader.done():
                await self._start()
            members = self.members.get(channel)
            if members is None:  # an empty set is a group still joined, waiting for the clean-up
                await self.layer.group_add(group_for(channel), self._channel_name)
                members = self.members[channel] = set()
            members.add(subscriber)

    def leave(self, channel: str, subscriber: Subscriber) -> None:
        members = self.members.get(channel)
        if members is None or subscriber not in members:
            return
        members.discard(subscriber)
        if not members:
            task = asyncio.ensure_future(self._clean_up())
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def deliver(self, channel: str, batch: PreparedBatch) -> None:
        for subscriber in tuple(self.members.get(channel, ())):
            try:
                await subscriber.relay_batch(channel, batch)
            except Exception:
                log.exception("WebSocket hub: delivery to one client of %s failed", channel)

    # --- inside ------------------------------------------------------------------------
    async def _start(self) -> None:
        """A channel to read (under the lock). Groups joined on a reader that died are joined again."""
        self._channel_name = await self.layer.new_channel(prefix="hub.")
        for channel in self.members:
            await self.layer.group_add(group_for(channel), self._channel_name)
        self._reader = asyncio.ensure_future(self._read(self._channel_name))
        expiry = getattr(self.layer, "group_expiry", None)
        if expiry:
            self._renewer = asyncio.ensure_future(self._renew(expiry / 4))

    async def _clean_up(self) -> None:
        async with self._lock:
            for channel in [channel for channel, members in self.members.items() if not members]:
                del self.members[channel]
                try:
                    await self.layer.group_discard(group_for(channel), self._channel_name)
                except Exception:  # the group's messages reach nobody here; the hub skips them
                    log.warning("WebSocket hub: could not leave %s", channel, exc_info=True)
            if not self.members and self._reader is not None:
                tasks = [task for task in (self._reader, self._renewer) if task is not None]
                self._reader = self._renewer = self._channel_name = None
                for task in tasks:
                    task.cancel()  # the layer's receive() unsubscribes the channel when cancelled
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, channel_name: str) -> None:
        failures = 0
        while True:
            try:
                message = await self.layer.receive(channel_name)
                failures = 0
                if message.get("type") == MESSAGE_TYPE:
                    await self.deliver(message["channel"], PreparedBatch(message["events"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis away, or a message not from the relay: clients see gaps in their sequence numbers.
                failures += 1
                log.exception("WebSocket hub: receiving failed (%d in a row)", failures)
                await asyncio.sleep(min(0.25 * 2 ** failures, 5.0))

    async def _renew(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            async with self._lock:
                for channel in self.members:
                    try:
                        await self.layer.group_add(group_for(channel), self._channel_name)
                    except Exception:
                        log.warning("WebSocket hub: could not renew %s", channel, exc_info=True)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FanoutHub] = weakref.WeakKeyDictionary()


def hub() -> FanoutHub:
    """This event loop's hub (a web process runs one loop)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = FanoutHub(get_channel_layer())
    return found
