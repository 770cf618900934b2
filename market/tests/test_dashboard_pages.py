"""The dashboard's pages are useful with JavaScript off: the server renders
prices, candles, the trade tape, alerts and the pipeline's offsets, filters
and sorts them, and acknowledges alerts through plain forms; HTMX requests get
only the fragment they swap. Real PostgreSQL, Redis and Kafka."""

from __future__ import annotations

import json
import socket
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.test import Client
from rest_framework.test import APIClient

from alerts.models import Alert
from market.models import Symbol
from market import pipeline_status as status_module
from market.rollups import market_stats_refresh
from market.services import LATEST_QUOTE_KEY, LATEST_TRADE_KEY, latest_events_store, symbols_seed
from market.tests.api_data import store_trades
from market.views import ALERT_ROWS, TAPE_ROWS
from streaming.dead_letters import Poison, dead_letters_send
from streaming.heartbeats import heartbeat
from streaming.kafka import EventPublisher
from streaming.offsets import offsets_save
from streaming.schemas import Quote, Trade
from streaming.topics import TRADES, topic

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def minute_ago(minutes: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes)


def trades_of(symbol: str, prices: list[str], *, start: datetime) -> list[Trade]:
    return [Trade(id=f"{symbol}-{i}", symbol=symbol, ts=start + timedelta(seconds=20 * i), seq=i,
                  price=Decimal(price), size=Decimal(100 + i), side="buy" if i % 2 else "sell")
            for i, price in enumerate(prices)]


def quote_of(symbol: str, bid: str, ask: str) -> Quote:
    return Quote(id=f"q-{symbol}", symbol=symbol, ts=datetime.now(UTC), bid=Decimal(bid), ask=Decimal(ask),
                 bid_size=Decimal(300), ask_size=Decimal(500))


@pytest.fixture
def market(redis_clean):
    """AAPL rising from 100 to 110.5, MSFT falling from 400 to 390, over the last few minutes,
    stored as build_candles would; latest trade and quote and 24h statistics in Redis."""
    symbols_seed(tickers=["AAPL", "MSFT", "NVDA"])
    aapl = trades_of("AAPL", ["100", "104.25", "107", "110.5"], start=minute_ago(3))
    msft = trades_of("MSFT", ["400", "395", "390"], start=minute_ago(3))
    store_trades(aapl + msft)
    latest_events_store(key_format=LATEST_TRADE_KEY, events=aapl + msft)
    latest_events_store(key_format=LATEST_QUOTE_KEY, events=[quote_of("AAPL", "110.49", "110.52"),
                                                             quote_of("MSFT", "389.9", "390.1")])
    market_stats_refresh(now=datetime.now(UTC))
    return {"AAPL": aapl, "MSFT": msft}


def rows_of(html: str, table_id: str) -> list[str]:
    """The body rows of the table (or tbody) with that id."""
    body = html.split(f'id="{table_id}"', 1)[1].split("</tbody>", 1)[0]
    if "<tbody" in body:  # the id is the table's: skip its head
        body = body.split("<tbody", 1)[1]
    return re.findall(r"<tr\b.*?</tr>", body, flags=re.S)


def external_references(html: str) -> list[str]:
    """src/href values that would make the browser fetch from another host."""
    refs = re.findall(r'\b(?:src|href)="([^"]*)"', html)
    return [ref for ref in refs if re.match(r"(?i)^(https?:)?//", ref)]


# --- overview -------------------------------------------------------------------------------
def test_the_overview_shows_every_symbol_with_price_change_sparkline_and_book(market):
    response = Client().get("/")
    assert response.status_code == 200
    html = response.content.decode()
    rows = rows_of(html, "market")
    assert [re.search(r'data-symbol="(\w+)"', row).group(1) for row in rows] == ["AAPL", "MSFT", "NVDA"]
    aapl, msft, nvda = rows
    # Fixed decimals, right-aligned (.num), direction as an arrow as well as a colour class.
    assert '<span class="value">110.50</span>' in aapl
    assert 'class="num col-change up">▲ <span class="value">+10.50</span>' in aapl
    assert 'class="num col-change_pct up">▲ <span class="value">+10.50</span>%' in aapl
    assert 'class="num col-change down">▼ <span class="value">-10.00</span>' in msft
    assert '<span class="value">110.49</span>' in aapl and '<span class="value">110.52</span>' in aapl
    assert '<span class="value">406</span>' in aapl  # 24h volume: 100 + 101 + 102 + 103
    points = re.search(r'<polyline points="([^"]*)"', aapl).group(1)
    assert len(points.split()) >= 1
    # A symbol with no trade yet: dashes, not zeros.
    assert '<span class="value">—</span>' in nvda
    assert 'href="/symbols/AAPL/"' in aapl


def test_the_overview_sorts_on_the_server_by_any_column(market):
    def order(query):
        html = Client().get(f"/?{query}").content.decode()
        return [re.search(r'data-symbol="(\w+)"', row).group(1) for row in rows_of(html, "market")]

    assert order("sort=last&dir=desc") == ["MSFT", "AAPL", "NVDA"]  # no price: last either way
    assert order("sort=last&dir=asc") == ["AAPL", "MSFT", "NVDA"]
    assert order("sort=change_pct&dir=desc") == ["AAPL", "MSFT", "NVDA"]
    assert order("sort=nonsense") == ["AAPL", "MSFT", "NVDA"]
    html = Client().get("/?sort=last&dir=desc").content.decode()
    assert 'aria-sort="descending"' in html


# --- symbol page -------------------------------------------------------------------------------
def test_the_symbol_page_shows_quote_candles_and_a_bounded_trade_tape(redis_clean):
    symbols_seed(tickers=["AAPL"])
    trades = trades_of("AAPL", [str(100 + i) for i in range(TAPE_ROWS + 7)], start=minute_ago(15))
    store_trades(trades)
    latest_events_store(key_format=LATEST_TRADE_KEY, events=trades)
    latest_events_store(key_format=LATEST_QUOTE_KEY, events=[quote_of("AAPL", "126.00", "126.04")])

    html = Client().get("/symbols/aapl/").content.decode()
    tape = rows_of(html, "tape")
    assert len(tape) == TAPE_ROWS
    assert "126.00" in tape[0] and "▼ sell" in tape[0] and "▲ buy" in tape[1]  # newest first; side by arrow too
    assert 'data-field="bid">126.00<' in html and 'data-field="spread">0.04<' in html
    assert 'data-api="/api/v1/candles/AAPL"' in html and 'data-interval="1m"' in html
    assert "Latest 1m candles" in html and "<td>" + trades[-1].ts.strftime("%Y-%m-%d %H:%M:00") in html

    five = Client().get("/symbols/AAPL/?interval=5m").content.decode()
    assert 'data-interval="5m"' in five and 'href="?interval=5m" data-interval="5m" aria-current="true"' in five
    assert Client().get("/symbols/AAPL/?interval=7m").content.decode().count('aria-current="true"') == 1


def test_prices_and_sizes_below_a_cent_or_beyond_a_float_show_every_digit(redis_clean):
    symbols_seed(tickers=["SHIB-USD"])
    start = minute_ago(5)
    trades = [Trade(id=f"shib-{i}", symbol="SHIB-USD", ts=start + timedelta(seconds=i), seq=i, price=Decimal(price),
                    size=Decimal(size), side="buy") for i, (price, size) in
              enumerate([("0.00001215", "123456789012.12345678"), ("0.00001227", "9999999999999999")])]
    store_trades(trades)
    latest_events_store(key_format=LATEST_TRADE_KEY, events=trades)
    latest_events_store(key_format=LATEST_QUOTE_KEY, events=[quote_of("SHIB-USD", "0.00001226", "0.00001228")])
    market_stats_refresh(now=datetime.now(UTC))

    html = Client().get("/symbols/SHIB-USD/").content.decode()
    assert '<span class="value">0.00001227</span>' in html and '<span class="value">+0.00000012</span>' in html
    assert 'data-field="bid">0.00001226<' in html and 'data-field="spread">0.00000002<' in html
    tape = rows_of(html, "tape")
    assert ">0.00001227<" in tape[0] and ">9,999,999,999,999,999<" in tape[0]
    assert ">123,456,789,012.12345678<" in tape[1]
    overview = Client().get("/").content.decode()
    assert '<span class="value">0.00001227</span>' in overview
    assert '<span class="value">10,000,123,456,789,011.12345678</span>' in overview  # the 24h volume, exactly


def test_an_unknown_symbol_is_a_404_page():
    response = Client().get("/symbols/NOPE/")
    assert response.status_code == 404


# --- alerts --------------------------------------------------------------------------------------
def make_alert(alert_id: str, *, symbol="AAPL", severity="high", type="price_spike", minutes=1) -> Alert:
    when = minute_ago(minutes)
    return Alert.objects.create(id=alert_id, type=type, severity=severity, symbol=symbol,
                                message=f"{symbol} moved {alert_id}", observed={"move_pct": "6.1"},
                                event_time=when, detected_at=when)


@pytest.fixture
def alerts():
    symbols_seed(tickers=["AAPL", "MSFT"])
    return [make_alert("al-1", minutes=5), make_alert("al-2", symbol="MSFT", severity="low", type="stale_feed",
                                                        minutes=4),
            make_alert("al-3", severity="critical", minutes=3)]


def alert_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="alert-([\w-]+)"', html)


def test_the_alerts_page_filters_on_the_server_and_answers_htmx_with_the_list_only(alerts):
    page = Client().get("/alerts/").content.decode()
    assert alert_ids(page) == ["al-3", "al-2", "al-1"]  # newest first
    assert "<html" in page and 'hx-target="#alert-list"' in page

    assert alert_ids(Client().get("/alerts/?symbol=aapl").content.decode()) == ["al-3", "al-1"]
    assert alert_ids(Client().get("/alerts/?severity=low").content.decode()) == ["al-2"]
    assert alert_ids(Client().get("/alerts/?type=price_spike&severity=critical").content.decode()) == ["al-3"]
    assert alert_ids(Client().get("/alerts/?state=resolved").content.decode()) == []
    for query, unknown in (("severity=bogus", "&#x27;bogus&#x27; is not a severity"),
                           ("symbol=NOPE&severity=high", "&#x27;NOPE&#x27; is not a symbol")):
        page = Client().get(f"/alerts/?{query}").content.decode()
        assert alert_ids(page) == [] and f"No alerts: {unknown}." in page  # not every alert
        assert 'data-none="1"' in page  # nor one the stream brings

    fragment = Client().get("/alerts/?symbol=MSFT", HTTP_HX_TARGET="alert-list", **HTMX).content.decode()
    assert "<html" not in fragment and fragment.lstrip().startswith('<div id="alert-list"')
    assert 'data-symbol="MSFT"' in fragment.split(">", 1)[0]  # the filters, for live alerts to match
    assert alert_ids(fragment) == ["al-2"]


def test_a_hidden_symbols_alerts_are_not_listed(alerts):
    Symbol.objects.filter(ticker="MSFT").update(active=False)
    assert alert_ids(Client().get("/alerts/").content.decode()) == ["al-3", "al-1"]
    assert [a["id"] for a in APIClient().get("/api/v1/alerts").json()["alerts"]] == ["al-3", "al-1"]
    # nor added live: the row the page fetches for an alert the stream announces
    assert Client().get("/alerts/al-2/row").status_code == 404
    assert Client().get("/alerts/al-1/row").status_code == 200


def test_the_alert_list_keeps_a_fixed_number_of_rows():
    symbols_seed(tickers=["AAPL"])
    for i in range(ALERT_ROWS + 5):
        make_alert(f"al-{i:03d}", minutes=100 - i)
    assert len(alert_ids(Client().get("/alerts/").content.decode())) == ALERT_ROWS


def test_one_alert_row_is_served_for_the_live_list(alerts):
    row = Client().get("/alerts/al-3/row?fresh=1", **HTMX).content.decode()
    assert row.strip().startswith('<tr id="alert-al-3"') and "fresh" in row.split(">", 1)[0]
    assert "Critical" in row and "price spike" in row
    compact = Client().get("/alerts/al-3/row?compact=1").content.decode()
    assert "/symbols/AAPL/" not in compact  # the symbol page's rows have no symbol column
    assert Client().get("/alerts/nope/row").status_code == 404


def test_an_anonymous_visitor_sees_no_buttons_and_cannot_acknowledge(alerts):
    page = Client().get("/alerts/").content.decode()
    assert "Log in to act" in page and 'data-action="acknowledge"' not in page
    plain = Client().post("/alerts/al-1/acknowledge")
    assert plain.status_code == 302 and plain["Location"].startswith("/login/")
    htmx = Client().post("/alerts/al-1/acknowledge", **HTMX)
    assert htmx.status_code == 401 and htmx["HX-Redirect"].startswith("/login/")
    assert Alert.objects.get(id="al-1").acknowledged_at is None


def test_logging_in_at_login_without_a_next_page_lands_on_the_market():
    get_user_model().objects.create_user("trader", password="pw-for-tests")
    logged_in = Client().post("/login/", {"username": "trader", "password": "pw-for-tests", "next": ""})
    assert logged_in.status_code == 302 and logged_in["Location"] == "/"


def test_a_logged_in_user_acknowledges_with_htmx_and_resolves_without_javascript(alerts):
    user = get_user_model().objects.create_user("trader", password="pw-for-tests")  # not staff
    client = Client(enforce_csrf_checks=True)
    login_page = client.get("/login/?next=/alerts/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.content.decode()).group(1)
    logged_in = client.post("/login/", {"username": "trader", "password": "pw-for-tests", "next": "/alerts/",
                                        "csrfmiddlewaretoken": token})
    assert logged_in.status_code == 302 and logged_in["Location"] == "/alerts/"

    page = client.get("/alerts/?symbol=AAPL").content.decode()
    assert 'data-action="acknowledge"' in page and "trader" in page
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert client.post("/alerts/al-1/acknowledge", **HTMX).status_code == 403  # no CSRF token: refused

    row = client.post("/alerts/al-1/acknowledge", {"csrfmiddlewaretoken": token}, **HTMX)
    assert row.status_code == 200
    html = row.content.decode()
    assert html.strip().startswith('<tr id="alert-al-1"') and "● acknowledged" in html and "by trader" in html
    assert 'data-action="acknowledge"' not in html and 'data-action="resolve"' in html
    assert Alert.objects.get(id="al-1").acknowledged_by == user

    back = client.post("/alerts/al-1/resolve", {"csrfmiddlewaretoken": token, "next": "/alerts/?symbol=AAPL"})
    assert back.status_code == 302 and back["Location"] == "/alerts/?symbol=AAPL"
    resolved = Alert.objects.get(id="al-1")
    assert resolved.resolved_by == user and resolved.acknowledged_by == user
    elsewhere = client.post("/alerts/al-3/resolve", {"csrfmiddlewaretoken": token, "next": "https://evil.example/"})
    assert elsewhere["Location"] == "/alerts/"


# --- pipeline -----------------------------------------------------------------------------------
def test_the_pipeline_page_shows_offsets_lag_dead_letters_processes_and_storage(kafka_topics, redis_clean, settings):
    publisher = EventPublisher(name="test")
    for i in range(10):
        publisher.publish(topic(TRADES), f"S{i}".encode(), b"{}")
    publisher.flush()
    group = f"{settings.KAFKA_CONSUMER_GROUP_PREFIX}.build_candles"
    offsets_save(group=group, offsets={(topic(TRADES), 0): 0, (topic(TRADES), 1): 0})
    dead_letters_send(publisher=publisher, consumer="build_candles", poison=[
        Poison(topic(TRADES), 1, 7, b"AAPL", b"not json at all", "JSON is malformed: invalid character")])
    heartbeat("build_candles")

    response = Client().get("/pipeline/")
    assert response.status_code == 200
    html = response.content.decode()
    row = re.search(r'<tr class="group-row" data-consumer="build_candles" data-topic="market.trades" '
                    r'data-lag="(\d+)"', html)
    assert row and int(row.group(1)) == 10
    assert f"<code>{topic(TRADES)}</code>" in html and "2 partitions" in html
    assert '<strong id="dead-letter-count">1</strong>' in html
    assert "JSON is malformed: invalid character" in html and f"{topic(TRADES)}[1]@7" in html
    assert "not json at all" in html
    assert re.search(r'data-process="build_candles" data-state="running"', html)
    assert re.search(r'data-process="relay_streams" data-state="down"', html)
    assert "native range partitions" in html
    for link in ('href="/admin/"', 'href="/api/docs/"', 'href="/metrics"', 'href="/ready"'):
        assert link in html

    offsets_save(group=group, offsets={(topic(TRADES), p): end for p, end in _ends(topic(TRADES)).items()})
    fragment = Client().get("/pipeline/", **HTMX).content.decode()
    assert "<html" not in fragment
    assert 'data-consumer="build_candles" data-topic="market.trades" data-lag="0"' in fragment


def _ends(name: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    from streaming.kafka import consumer_config

    consumer = Consumer(consumer_config("test-ends"))
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in (0, 1)}
    finally:
        consumer.close()


def test_messages_per_second_come_from_the_last_two_samples(kafka_topics, redis_clean, settings):
    publisher = EventPublisher(name="test")
    for i in range(30):
        publisher.publish(topic(TRADES), f"S{i}".encode(), b"{}")
    publisher.flush()
    # A sample taken 2 s ago, when the topic held 10 fewer messages.
    key = status_module.SAMPLES_KEY.format(settings.KAFKA_TOPIC_PREFIX)
    redis_clean.set(key, json.dumps([{"t": time.time() - 2.0, "totals": {topic(TRADES): 20}}]))

    status = status_module.pipeline_status()
    trades = next(t for t in status.topics if t.base_name == TRADES)
    assert trades.end_total == 30
    older, newer = json.loads(redis_clean.get(key))  # the old sample and this reading, kept as the last two
    assert newer["totals"][topic(TRADES)] == 30
    assert trades.messages_per_second == pytest.approx(10 / (newer["t"] - older["t"]))
    # Refreshed again within the second: the same pair, the same rate.
    again = next(t for t in status_module.pipeline_status().topics if t.base_name == TRADES)
    assert again.messages_per_second == pytest.approx(trades.messages_per_second)


def test_the_pipeline_page_says_when_kafka_is_away(redis_clean, settings):
    offsets_save(group=f"{settings.KAFKA_CONSUMER_GROUP_PREFIX}.build_candles", offsets={(topic(TRADES), 0): 42})
    settings.KAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:1"
    html = Client().get("/pipeline/").content.decode()
    assert "Kafka did not answer" in html and "make status" in html
    assert "127.0.0.1:1" not in html  # the page is public: no addresses
    assert 'id="processes"' in html  # the rest of the page is still there
    # The committed offset is known, the lag is not (it was shown as 0).
    row = re.search(r'<tr class="group-row" data-consumer="build_candles" data-topic="market.trades" '
                    r'data-lag="">.*?</tr>', html, re.S)
    assert row and 'data-field="lag">—</td>' in row.group(0)


def test_the_pipeline_page_says_when_redis_is_away(redis_away):
    response = Client().get("/pipeline/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Redis did not answer" in html and "heartbeats (kept there) are unknown" in html
    assert "Unknown: the heartbeats are kept in Redis." in html
    assert 'id="lag-table"' in html  # offsets and lag still come from Kafka and PostgreSQL


# --- every page --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/symbols/AAPL/", "/alerts/", "/pipeline/", "/login/"])
def test_every_page_loads_only_local_assets_and_links_admin_api_docs_and_metrics(path, redis_clean, kafka_topics):
    symbols_seed(tickers=["AAPL"])
    response = Client().get(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert external_references(html) == []
    for asset in re.findall(r'(?:src|href)="/static/([^"]+)"', html):
        assert finders.find(asset), f"{asset} is referenced but not in static/ (run deploy/vendor_static.sh)"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    for link in ('href="/admin/"', 'href="/api/docs/"', 'href="/metrics"'):
        assert link in html


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("path", "page"), [("/", True), ("/alerts/", True), ("/symbols/AAPL/", True),
                                            ("/api/v1/trades/AAPL", False)])
def test_with_postgres_away_a_page_or_the_api_says_so_in_a_503(redis_clean, path, page):
    from django.db import connection

    symbols_seed(tickers=["AAPL"])
    real = dict(connection.settings_dict)
    connection.close()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        connection.settings_dict["PORT"] = closed.getsockname()[1]
        try:
            response = Client().get(path)
        finally:
            connection.close()
            connection.settings_dict.update(real)
    assert response.status_code == 503 and response["Retry-After"] == "5"
    if page:
        assert "PostgreSQL did not answer" in response.content.decode()
    else:
        assert response.json()["error"]["code"] == "service_unavailable"


def test_after_too_many_wrong_passwords_from_one_address_its_log_ins_fail_for_a_minute(redis_clean, settings):
    import base64

    settings.LOGIN_FAILURES_PER_MINUTE = 3
    get_user_model().objects.create_user("trader", password="pw-for-tests")
    guesser = Client(REMOTE_ADDR="192.0.2.7")
    for guess in range(3):
        assert guesser.post("/login/", {"username": "trader", "password": f"guess-{guess}"}).status_code == 200
    refused = guesser.post("/login/", {"username": "trader", "password": "pw-for-tests"})  # the right one, now
    assert refused.status_code == 200 and "Too many failed log-ins from your address" in refused.content.decode()
    basic = base64.b64encode(b"trader:pw-for-tests").decode()
    assert guesser.get("/api/v1/symbols", HTTP_AUTHORIZATION=f"Basic {basic}").status_code == 401  # the API too
    admin = guesser.post("/admin/login/", {"username": "trader", "password": "pw-for-tests"})
    assert "Too many failed log-ins from your address" in admin.content.decode()
    nul = base64.b64encode(b"tra\x00der:pw").decode()  # HTTP Basic carries any bytes: a 401, not a database error
    assert Client().get("/api/v1/symbols", HTTP_AUTHORIZATION=f"Basic {nul}").status_code == 401
    assert Client(REMOTE_ADDR="192.0.2.8").post("/login/", {"username": "trader", "password": "pw-for-tests"}
                                               ).status_code == 302  # another address is not held back
    assert 0 < redis_clean.ttl(next(iter(redis_clean.scan_iter("*login-failures*")))) <= 60  # over in a minute


def test_the_dashboards_pages_run_only_this_servers_scripts_and_the_api_keeps_its_own(market):
    for url in ("/", "/symbols/AAPL/", "/alerts/", "/pipeline/", "/login/"):
        policy = Client().get(url)["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy, url
    for url in ("/api/docs/", "/admin/login/", "/api/v1/symbols"):  # inline scripts of their own (or no page)
        assert "Content-Security-Policy" not in Client().get(url), url


def test_a_time_of_another_day_shows_its_date():
    from market.templatetags.dashboard import clock

    now = datetime.now(UTC).replace(microsecond=0)
    assert clock(now) == now.strftime("%H:%M:%S")
    assert clock(datetime(2026, 1, 5, 14, 30, 1, tzinfo=UTC)) == "2026-01-05 14:30:01"  # a replayed file's trade
    yesterday = now - timedelta(days=1)
    assert clock(yesterday) == yesterday.strftime("%Y-%m-%d %H:%M:%S") and clock(None) == "—"
