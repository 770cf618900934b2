"""The thin slice through the real services: `manage.py simulate` publishes to
Kafka, the build_candles consumer stores the trades, and the API serves them
with the ids that are on the broker."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import Client

from market.pipelines import TradesPipeline
from market.services import symbols_seed
from streaming.kafka import topics_delete, topics_ensure
from streaming.runner import ConsumerRunner, Events, RunnerOptions
from streaming.schemas import Trade, decoder_for
from streaming.testing import consume_until, read_topic
from streaming.topics import TRADES, topic

pytestmark = pytest.mark.django_db(transaction=True)


def test_simulated_trades_reach_the_api_with_the_ids_on_the_broker(kafka_topics, redis_clean):
    symbols_seed(tickers=["AAPL", "MSFT"])
    call_command("simulate", "--rate", "max", "--duration", "5", "--seed", "11", "--symbols", "AAPL,MSFT")
    on_broker = [decoder_for(Trade).decode(m.value()) for m in read_topic(topic(TRADES))]
    assert len(on_broker) > 100

    runner = ConsumerRunner(TradesPipeline(), RunnerOptions(batch_size=1000, batch_wait=0.2))
    runner.subscribe()
    consume_until(runner, len(on_broker))
    runner.close()

    response = Client().get("/api/v1/trades/AAPL?limit=5")
    assert response.status_code == 200
    body = response.json()
    newest_aapl = sorted((t for t in on_broker if t.symbol == "AAPL"), key=lambda t: (t.ts, t.id))[-5:][::-1]
    assert [t["id"] for t in body["trades"]] == [t.id for t in newest_aapl]
    assert [Decimal(t["price"]) for t in body["trades"]] == [t.price for t in newest_aapl]


@pytest.mark.django_db(transaction=False)
def test_the_trades_endpoint_refuses_an_unknown_symbol_and_a_bad_limit():
    symbols_seed(tickers=["AAPL"])
    client = Client()
    unknown = client.get("/api/v1/trades/NOPE")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_symbol"
    for limit in ("-1", "100000", "abc"):
        bad = client.get(f"/api/v1/trades/AAPL?limit={limit}")
        assert bad.status_code == 400, limit
        assert bad.json()["error"]["code"] == "invalid_parameter"


def test_a_restarted_simulator_goes_on_from_the_stored_prices(kafka_topics, redis_clean):
    stored = Trade(id="before-restart", symbol="AAPL", ts=datetime.now(UTC) - timedelta(minutes=5), seq=1,
                   price=Decimal("123.45"), size=Decimal(10), side="buy")
    pipeline = TradesPipeline()
    events = Events({TRADES: [stored]})
    pipeline.prepare(events)  # today's partition, in native partition mode
    with transaction.atomic():
        pipeline.store(events)
    pipeline.close()

    def first_prices(*fresh: str) -> dict[str, Decimal]:
        call_command("simulate", "--rate", "max", "--duration", "1", "--seed", "5", "--symbols", "AAPL,MSFT", *fresh,
                     stdout=StringIO())
        first: dict[str, Decimal] = {}
        for message in read_topic(topic(TRADES)):
            trade = decoder_for(Trade).decode(message.value())
            if trade.id.startswith("sim-"):
                first.setdefault(trade.symbol, trade.price)
        topics_delete(kafka_topics)  # the next run reads its own trades
        topics_ensure()
        return first

    continued = first_prices()
    assert abs(continued["AAPL"] - Decimal("123.45")) < Decimal("1.5")
    assert abs(continued["MSFT"] - Decimal("420.00")) < Decimal("5")  # nothing stored: its profile's price
    assert abs(first_prices("--fresh")["AAPL"] - Decimal("230.00")) < Decimal("3")
