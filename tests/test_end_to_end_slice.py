"""The thin slice through the real services: `manage.py simulate` publishes to
Kafka, the build_candles consumer stores the trades, and the API serves them
with the ids that are on the broker."""

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client

from market.pipelines import TradesPipeline
from market.services import symbols_seed
from streaming.runner import ConsumerRunner, RunnerOptions
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
