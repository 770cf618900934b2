"""How the relay splits a numbered batch into messages (pure)."""

from hypothesis import given
from hypothesis import strategies as st

from streaming.relay import relay_messages


@given(st.dictionaries(st.sampled_from(["trades.AAPL", "quotes.AAPL", "trades.MSFT", "alerts"]),
                       st.integers(min_value=0, max_value=30)),
       st.integers(min_value=1, max_value=12))
def test_relay_messages_carry_each_channels_events_in_order_and_at_most_the_bound_each(sizes, max_events):
    numbered = {channel: [(seq, f"{channel}:{seq}") for seq in range(1, size + 1)] for channel, size in sizes.items()}
    messages = relay_messages(numbered, max_events)
    total = sum(sizes.values())
    assert all(0 < sum(map(len, message.values())) <= max_events for message in messages)
    assert len(messages) == -(-total // max_events)  # full messages but the last
    for channel, items in numbered.items():
        assert [item for message in messages for item in message.get(channel, [])] == items
