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

The hub joins a group when its first local subscriber does, leaves it with
the last one, and stops reading when it has no subscriber left. Joins and
leaves are serialised, so a subscriber that has joined is a member of the
group: a relay batch sent after `join` returns reaches it.
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

    async def join(self, channel: str, subscriber: Subscriber) -> None:
        async with self._lock:
            members = self.members.get(channel)
            if members is None:
                if self._reader is None:
                    self._channel_name = await self.layer.new_channel(prefix="hub.")
                    self._reader = asyncio.ensure_future(self._read(self._channel_name))
                await self.layer.group_add(group_for(channel), self._channel_name)
                members = self.members[channel] = set()
            members.add(subscriber)

    async def leave(self, channel: str, subscriber: Subscriber) -> None:
        async with self._lock:
            members = self.members.get(channel)
            if members is None or subscriber not in members:
                return
            members.discard(subscriber)
            if members:
                return
            del self.members[channel]
            await self.layer.group_discard(group_for(channel), self._channel_name)
            if not self.members:
                reader, self._reader, self._channel_name = self._reader, None, None
                reader.cancel()  # the layer's receive() unsubscribes the channel when cancelled
                await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, channel_name: str) -> None:
        failures = 0
        while True:
            try:
                message = await self.layer.receive(channel_name)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis away: clients will see the gap in their sequence numbers.
                failures += 1
                log.exception("WebSocket hub: channel layer receive failed (%d in a row)", failures)
                await asyncio.sleep(min(0.25 * 2 ** failures, 5.0))
                continue
            if message.get("type") == MESSAGE_TYPE:
                await self.deliver(message["channel"], PreparedBatch(message["events"]))

    async def deliver(self, channel: str, batch: PreparedBatch) -> None:
        for subscriber in tuple(self.members.get(channel, ())):
            try:
                await subscriber.relay_batch(channel, batch)
            except Exception:
                log.exception("WebSocket hub: delivery to one client of %s failed", channel)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FanoutHub] = weakref.WeakKeyDictionary()


def hub() -> FanoutHub:
    """This event loop's hub (a web process runs one loop)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = FanoutHub(get_channel_layer())
    return found
