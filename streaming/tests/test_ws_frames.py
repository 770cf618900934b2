"""Prepared batches: the frames a web process writes to every client, read
back with the `websockets` library's own frame parser."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from streaming.ws_frames import PreparedBatch, text_frame


def parse_frames(buffer: bytes) -> list[Frame]:
    reader = StreamReader()
    reader.feed_data(buffer)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
        else:
            raise AssertionError("a truncated frame")
    return frames


# Every header form: 7-bit lengths, 16-bit (126..65535) and 64-bit (65536+).
payload_lengths = st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]) | st.integers(0, 300)


@given(length=payload_lengths, char=st.characters(codec="utf-8", exclude_categories=["Cs"]))
def test_a_text_frame_is_one_final_unmasked_text_frame_of_the_payload(length, char):
    payload = (char * length).encode()
    (frame,) = parse_frames(text_frame(payload))
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.TEXT, True, payload)


@given(texts=st.lists(st.text(max_size=300), max_size=30), first=st.integers(1, 10**9),
       last_sent=st.integers(0, 10**9 + 40))
def test_frames_after_a_seq_are_exactly_the_newer_events_one_message_each(texts, first, last_sent):
    events = [[first + index, text] for index, text in enumerate(texts)]
    batch = PreparedBatch(events)
    start = batch.start_after(last_sent)
    frames = parse_frames(batch.frames_from(start))
    assert [frame.data.decode() for frame in frames] == [text for seq, text in events if seq > last_sent]
    assert all(frame.fin and frame.opcode is Opcode.TEXT for frame in frames)


@given(seqs=st.lists(st.integers(1, 200), min_size=1, max_size=60), cuts=st.lists(st.integers(0, 60), max_size=5),
       arrival=st.randoms(use_true_random=False))
def test_joined_batches_are_every_event_once_in_seq_order_whatever_order_they_came_in(seqs, cuts, arrival):
    """A channel's batches, possibly overlapping (a seq in two) and arriving out of order."""
    seqs = sorted(seqs)
    bounds = sorted({0, len(seqs), *(min(cut, len(seqs)) for cut in cuts)})
    batches = []
    for start, end in zip(bounds, bounds[1:]):
        part = sorted(set(seqs[start:end]))
        batches.append(PreparedBatch([[seq, f'{{"seq":{seq}}}'] for seq in part]))
    arrival.shuffle(batches)
    joined = PreparedBatch.joined(batches)
    assert joined.seqs == sorted(set(seqs))
    assert joined.texts == [f'{{"seq":{seq}}}' for seq in joined.seqs]


@given(events=st.one_of(
    st.lists(st.tuples(st.integers(1, 9), st.text(max_size=3)), min_size=2, max_size=5).filter(
        lambda events: any(b[0] <= a[0] for a, b in zip(events, events[1:]))),
    st.lists(st.one_of(st.integers(), st.text(), st.tuples(st.integers()), st.tuples(st.text(), st.text()),
                       st.tuples(st.integers(), st.integers())), min_size=1, max_size=3),
))
def test_anything_but_ascending_seqs_with_text_is_refused(events):
    try:
        PreparedBatch([list(event) if isinstance(event, tuple) else event for event in events])
    except ValueError:
        return
    raise AssertionError(f"accepted {events!r}")
