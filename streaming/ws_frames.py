"""One channel's events of one relay batch, prepared once for every client.

A web process hands the same events to each of its clients that follows the
channel. Encoding them once per process, not once per client, is what lets
one process serve a thousand clients: the events become WebSocket text frames
(RFC 6455 §5.2: FIN set, opcode 1, unmasked as a server sends them), one
frame per event, joined in one buffer that is written to each client's socket
as is. A client still receives one WebSocket message per event.

Pure: no I/O. streaming/hub.py delivers the batches, streaming/consumers.py
writes them.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from functools import cached_property

_FIN_TEXT = 0x81


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, unfragmented WebSocket text frame."""
    length = len(payload)
    if length < 126:
        header = bytes((_FIN_TEXT, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", _FIN_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, length)
    return header + payload


class PreparedBatch:
    """The relay's `[[seq, json text], ...]` for one channel (seqs ascending),
    as texts and, built on first use, as one buffer of frames."""

    def __init__(self, events: list) -> None:
        """Raises ValueError unless `events` is `[[seq, text], ...]` with whole seqs, ascending."""
        try:
            self.seqs = [seq for seq, _ in events]
            self.texts = [text for _, text in events]
        except (TypeError, ValueError):
            raise ValueError("a relay batch is [[seq, text], ...]") from None
        if not all(type(seq) is int for seq in self.seqs) or not all(type(text) is str for text in self.texts):
            raise ValueError("a relay batch's seqs are whole numbers and its events JSON text")
        if any(later <= earlier for earlier, later in zip(self.seqs, self.seqs[1:])):
            raise ValueError("a relay batch's seqs ascend")

    @classmethod
    def joined(cls, batches: list[PreparedBatch]) -> PreparedBatch:
        """Several batches of one channel as one, in seq order, each seq once. The relay sends a
        channel's batches in order; two relays during a rebalance may not."""
        if len(batches) == 1:
            return batches[0]
        joined = cls([])
        for batch in batches:
            joined.seqs += batch.seqs
            joined.texts += batch.texts
        if any(later.seqs[0] <= earlier.seqs[-1] for earlier, later in zip(batches, batches[1:])):
            by_seq = dict(zip(joined.seqs, joined.texts))
            joined.seqs = sorted(by_seq)
            joined.texts = [by_seq[seq] for seq in joined.seqs]
        return joined

    @property
    def last_seq(self) -> int:
        return self.seqs[-1]

    def start_after(self, seq: int) -> int:
        """Index of the first event newer than `seq` (len(self) when none is)."""
        return bisect_right(self.seqs, seq)

    def __len__(self) -> int:
        return len(self.seqs)

    @cached_property
    def _frames(self) -> tuple[bytes, list[int]]:
        frames = [text_frame(text.encode()) for text in self.texts]
        offsets, position = [], 0
        for frame in frames:
            offsets.append(position)
            position += len(frame)
        return b"".join(frames), offsets

    def frames_from(self, index: int) -> bytes:
        """The frames of events[index:], ready for a socket."""
        buffer, offsets = self._frames
        if index == 0:
            return buffer
        return buffer[offsets[index]:] if index < len(offsets) else b""
