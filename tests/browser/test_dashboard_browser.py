"""The dashboard in a real browser against the real pipeline.

Debian's Chromium (headless, driven by selenium through Debian's
chromedriver) loads pages from daphne, which runs as a subprocess on a free
port against the test database, Redis and Kafka of `make test`. The pipeline
runs too, each process a subprocess with the same environment: `simulate`
publishes trades and quotes, build_candles, ingest_quotes, detect_anomalies
and relay_streams consume them. Topics and consumer groups carry this
module's own prefix.

Nothing here sleeps for a result: every wait polls with a deadline
(WebDriverWait, streaming.testing.wait_for). Screenshots of each page go to
test-artifacts/screenshots/, the processes' output to test-artifacts/logs/.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from streaming.testing import wait_for

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="Debian's Chromium is not installed: apt-get install chromium chromium-driver"),
    # For pytest-django to create the test database. The data the pipeline
    # needs is committed by the module's `stack` fixture; a test that must
    # commit something for daphne to see uses `committed`.
    pytest.mark.django_db,
]

from selenium import webdriver  # noqa: E402 - after the skip reason, which needs no selenium
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
SYMBOLS = ["AAPL", "GOOGL", "MSFT", "AMZN", "META", "NVDA", "TSLA", "JPM", "V", "JNJ"]
CONSUMERS = ("build_candles", "ingest_quotes", "detect_anomalies", "relay_streams")
TRADES_PER_SECOND = 40
HISTORY = timedelta(minutes=60)  # published before the live simulator starts: charts and sparklines have a past
USERNAME, PASSWORD = "trader", "a-browser-test-password"
WAIT = 30  # seconds: the longest any single expectation may take


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Stack:
    """daphne and the pipeline's processes, each startable and stoppable by name."""

    env: dict[str, str]
    port: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    simulator_seed: int = 7  # the next simulator's: a restarted one must not publish the same ids again

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, name: str) -> list[str]:
        if name == "daphne":
            return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                    "finstream.asgi:application"]
        if name == "simulate":
            return [sys.executable, "manage.py", "simulate", "--rate", str(TRADES_PER_SECOND),
                    "--seed", str(self.simulator_seed), "--fresh", "--symbols", ",".join(SYMBOLS)]
        return [sys.executable, "manage.py", name]

    def start(self, name: str) -> None:
        (ARTIFACTS / "logs").mkdir(parents=True, exist_ok=True)
        with open(ARTIFACTS / "logs" / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(self.command(name), cwd=ROOT, env=self.env, stdout=log,
                                                    stderr=subprocess.STDOUT)
        if name == "simulate":
            self.simulator_seed += 1
        if name == "daphne":
            wait_for(self._daphne_listening, timeout=60, interval=0.1, what="daphne listening")

    def _daphne_listening(self) -> bool:
        server = self.processes["daphne"]
        assert server.poll() is None, f"daphne exited {server.returncode}: see {ARTIFACTS}/logs/daphne.log"
        return port_open(self.port)

    def stop(self, name: str) -> None:
        """SIGTERM (a consumer finishes its batch), then wait for the exit."""
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def check_running(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"{name} exited {process.returncode}: see {ARTIFACTS}/logs/{name}.log"


def committed(action):
    """Run `action` on a database connection of its own, in autocommit, and
    return its result: outside the test's transaction, so other processes see it."""
    from django.db import connections

    outcome: dict[str, object] = {}

    def run():
        try:
            outcome["value"] = action()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = error
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _empty_database() -> None:
    from django.core.management import call_command
    from django.db import connection

    from market.storage import SERIES_TABLES

    call_command("flush", interactive=False, verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(table.name for table in SERIES_TABLES)}")


def _publish_history(*, start: datetime) -> None:
    """A quiet hour of simulated trades and quotes, from `start` to now (seed 3; the live run is seed 7)."""
    from market.domain.simulator import MarketSimulator
    from market.feeds import feed_publish
    from streaming.kafka import EventPublisher
    from streaming.topics import QUOTES, TRADES, topic

    messages = MarketSimulator(symbols=SYMBOLS, seed=3, start=start, rate=3.0).wire_messages(
        trades_topic=topic(TRADES), quotes_topic=topic(QUOTES), until=datetime.now(UTC))
    feed_publish(messages=messages, publisher=EventPublisher(name="history"), pacer=None, should_stop=lambda: False)


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker):
    """The whole pipeline on the test services, running until the module ends.

    The database is written for real here (no test transaction): it is
    emptied before and after, as transactional tests leave it.
    """
    from django.contrib.auth import get_user_model
    from django.db import connection

    from alerts.services import alert_rules_seed
    from market import selectors
    from market.rollups import market_stats_refresh
    from market.services import symbols_seed
    from streaming.kafka import topics_delete, topics_ensure
    from streaming.redis import redis_client

    prefix = f"b{uuid.uuid4().hex[:8]}."
    overrides = {"KAFKA_TOPIC_PREFIX": prefix, "KAFKA_CONSUMER_GROUP_PREFIX": f"{prefix}group",
                 "KAFKA_TOPIC_PARTITIONS": 2}
    with override_settings(**overrides), django_db_blocker.unblock():
        _empty_database()
        redis_client().flushdb()
        topics_ensure()
        symbols_seed(tickers=SYMBOLS)
        alert_rules_seed()
        get_user_model().objects.create_user(USERNAME, password=PASSWORD)
        database = connection.settings_dict
        env = {
            **os.environ,
            "TIMESCALE_URL": f"postgresql://{database['USER']}:{database['PASSWORD']}@{database['HOST']}:"
                             f"{database['PORT']}/{database['NAME']}",
            "REDIS_URL": django_settings.REDIS_URL,
            "KAFKA_BOOTSTRAP_SERVERS": django_settings.KAFKA_BOOTSTRAP_SERVERS,
            **{name: str(value) for name, value in overrides.items()},
            "DATABASE_CONN_MAX_AGE": "0",  # hold no connection that would keep the test database from being dropped
            "METRICS_PORT": "0",
            "READY_CONSUMERS": ",".join(CONSUMERS[:3]),
            "CONSUMER_BATCH_WAIT_MS": "100",
            "PYTHONUNBUFFERED": "1",
        }
        stack = Stack(env=env, port=free_port())
        shutil.rmtree(ARTIFACTS / "logs", ignore_errors=True)  # this run's output only
        try:
            _publish_history(start=datetime.now(UTC) - HISTORY)
            for name in ("daphne", *CONSUMERS, "simulate"):
                stack.start(name)

            def every_symbol_traded():
                stack.check_running()
                rows = selectors.market_summary(symbols=SYMBOLS)
                return all(row.last is not None and row.bid is not None for row in rows)

            wait_for(every_symbol_traded, timeout=120, interval=0.5, what="a trade and a quote of every symbol")
            wait_for(lambda: market_stats_refresh(now=datetime.now(UTC)) == len(SYMBOLS), timeout=WAIT,
                     interval=0.5, what="1m candles of every symbol, for the 24h statistics")
            yield stack
        finally:
            for name in list(stack.processes):
                stack.stop(name)
            topics_delete(prefix)
            _empty_database()
            redis_client().flushdb()


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium with a fresh profile, as few background requests as it allows."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=tmp_path)}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def fits_a_phone(browser, shot: str) -> None:
    """Nothing on the page wider than a phone-width screen (tables scroll inside their own box)."""
    browser.set_window_size(375, 812)
    wait(browser, lambda d: js(d, "return document.documentElement.scrollWidth <= window.innerWidth;"),
         "the page to fit a phone-width screen")
    screenshot(browser, shot)


def wait(driver, condition, what: str, timeout: float = WAIT):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: condition(d), message=f"timed out after {timeout:.0f} s waiting for {what}")


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def mark_page(driver) -> None:
    """A marker that a reload would wipe: proves an update came without one."""
    js(driver, "window.__sameDocument = true;")


def same_page(driver) -> bool:
    return js(driver, "return window.__sameDocument === true;")


def live(driver) -> bool:
    return js(driver, "return document.getElementById('live-status').dataset.state;") == "live"


def assert_no_console_errors(driver, *, allow: tuple[str, ...] = ()) -> None:
    """No script error, failed asset or failed request on the pages the test saw (bar `allow`ed ones)."""
    errors = [entry["message"] for entry in driver.get_log("browser")
              if entry["level"] == "SEVERE" and not any(text in entry["message"] for text in allow)]
    assert errors == []


def screenshot(driver, name: str) -> None:
    """The whole page, not only the window: the window grows to the page's height for the shot."""
    width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
    page, chrome = js(driver, "return [document.documentElement.scrollHeight, "
                              "window.outerHeight - window.innerHeight];")
    driver.set_window_size(width, min(max(height, page + chrome), 4000))
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    driver.set_window_size(width, height)


def last_prices(driver) -> dict[str, str]:
    return js(driver, """
        var prices = {};
        document.querySelectorAll('#market tbody tr[data-symbol]').forEach(function (tr) {
          prices[tr.dataset.symbol] = tr.querySelector('.col-last .value').textContent;
        });
        return prices;""")


# --- the pages ---------------------------------------------------------------------------------
def test_the_overview_shows_every_symbol_and_prices_move_live(stack, browser):
    browser.get(stack.url + "/")
    mark_page(browser)
    before = last_prices(browser)
    assert sorted(before) == sorted(SYMBOLS)
    assert all(price != "—" for price in before.values()), before  # the server rendered them
    wait(browser, live, "the stream to connect")
    wait(browser, lambda d: any(last_prices(d)[s] != before[s] for s in SYMBOLS), "a price to change", timeout=15)
    assert same_page(browser)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#market .flash-up, #market .flash-down"),
         "a tick to flash")
    screenshot(browser, "overview")

    # Sorting in the browser, no reload: by symbol (values that do not move while we look), descending.
    browser.find_element(By.CSS_SELECTOR, 'a.sort[data-key="symbol"]').click()
    order = js(browser, """return Array.from(document.querySelectorAll('#market tbody tr[data-symbol]'))
                           .map(function (tr) { return tr.dataset.symbol; });""")
    assert order == sorted(SYMBOLS, reverse=True)
    assert browser.find_element(By.CSS_SELECTOR, "th.col-symbol").get_attribute("aria-sort") == "descending"
    assert "sort=symbol&dir=desc" in browser.current_url and same_page(browser)

    # A phone-width screen: nothing wider than the screen.
    fits_a_phone(browser, "overview-phone")
    assert_no_console_errors(browser)


def test_the_symbol_page_draws_candles_and_switches_interval(stack, browser):
    browser.get(stack.url + "/symbols/NVDA/")
    mark_page(browser)
    wait(browser, lambda d: js(d, "return Number(document.getElementById('chart').dataset.candles);") > 30,
         "the hour of 1m candles on the chart")
    assert browser.find_elements(By.CSS_SELECTOR, "#chart canvas")
    screenshot(browser, "symbol")

    browser.find_element(By.CSS_SELECTOR, '.intervals a[data-interval="5m"]').click()
    chart = "var c = document.getElementById('chart'); return [c.dataset.interval, Number(c.dataset.candles)];"
    wait(browser, lambda d: js(d, chart)[0] == "5m" and js(d, chart)[1] > 0, "5m candles on the chart")
    assert browser.find_element(By.CSS_SELECTOR, ".intervals a[aria-current]").get_attribute("data-interval") == "5m"
    assert browser.current_url.endswith("?interval=5m") and same_page(browser)
    # The table under the chart follows: its label and rows are the 5m candles' now.
    table = ("return [document.getElementById('candle-table-label').textContent,"
             " document.querySelectorAll('#candle-table-rows tr').length,"
             " Array.from(document.querySelectorAll('#candle-table-rows tr td:first-child'))"
             ".map(function (td) { return Number(td.textContent.slice(14, 16)); })];")
    label, count, minutes = js(browser, table)
    assert label == "Latest 5m candles (table)" and count > 0
    assert all(minute % 5 == 0 for minute in minutes), minutes

    # The tape goes live and stays at its fixed number of rows.
    tape_ids = ("return Array.from(document.querySelectorAll('#tape tr[data-id]'))"
                ".map(function (r) { return r.dataset.id; });")
    first = set(js(browser, tape_ids))
    rows = int(browser.find_element(By.ID, "tape").get_attribute("data-max-rows"))
    wait(browser, lambda d: len(set(js(d, tape_ids)) - first) >= rows // 2, "the tape to roll")
    assert len(js(browser, tape_ids)) == rows

    # A late print goes where its time puts it on the tape, not on top of it.
    from market.selectors import trade_latest
    from streaming.kafka import EventPublisher
    from streaming.schemas import Trade, encode
    from streaming.topics import TRADES, topic
    from streaming.wire import epoch_us_time

    tape_times = "return Array.from(document.querySelectorAll('#tape tr[data-id]')).map(r => r.dataset.time);"
    late = Trade(id=f"late-{uuid.uuid4().hex[:12]}", symbol="NVDA", seq=0, side="sell", size=Decimal(7),
                 ts=epoch_us_time(int(js(browser, tape_times)[2]) - 1), price=trade_latest(symbol="NVDA").price)
    publisher = EventPublisher(name="browser-test")
    publisher.publish(topic(TRADES), late.symbol, encode(late))
    publisher.flush()
    wait(browser, lambda d: late.id in js(d, tape_ids), "the late print on the tape")
    assert js(browser, tape_ids).index(late.id) > 0
    times = [int(time) for time in js(browser, tape_times)]
    assert times == sorted(times, reverse=True)

    fits_a_phone(browser, "symbol-phone")
    assert_no_console_errors(browser)


def test_an_injected_spike_appears_on_the_alerts_page_without_reload(stack, browser):
    from market.selectors import trade_latest
    from streaming.kafka import EventPublisher
    from streaming.schemas import Trade, encode
    from streaming.topics import TRADES, topic

    browser.get(stack.url + "/alerts/")
    mark_page(browser)
    wait(browser, live, "the stream to connect")
    spike_rows = ("return document.querySelectorAll("
                  "'#alert-rows tr[data-symbol=\"JPM\"][data-type=\"price_spike\"]').length;")
    before = js(browser, spike_rows)

    latest = trade_latest(symbol="JPM")
    spike = Trade(id=f"spike-{uuid.uuid4().hex[:12]}", symbol="JPM", seq=0, side="buy", size=Decimal(500),
                  # A second ahead of the simulator's clock, so the detector does not take it for a late print.
                  ts=datetime.now(UTC) + timedelta(seconds=1),
                  price=(latest.price * Decimal("1.3")).quantize(Decimal("0.01")))
    publisher = EventPublisher(name="browser-test")
    publisher.publish(topic(TRADES), spike.symbol, encode(spike))  # the module's topic prefix is in force
    publisher.flush()

    wait(browser, lambda d: js(d, spike_rows) > before, "the spike's alert to appear")
    # At the top: above every row the server rendered (other live alerts may have arrived too).
    rows = js(browser, """return Array.from(document.querySelectorAll('#alert-rows tr')).map(function (tr) {
        return [tr.dataset.symbol, tr.dataset.type, tr.dataset.severity, tr.classList.contains('fresh')]; });""")
    spike_at = next(i for i, row in enumerate(rows) if row[:2] == ["JPM", "price_spike"])
    assert rows[spike_at][2] == "critical"
    assert all(fresh for *_, fresh in rows[:spike_at + 1]), rows
    assert same_page(browser)
    screenshot(browser, "alerts")
    assert_no_console_errors(browser)


def test_a_logged_in_user_acknowledges_an_alert(stack, browser):
    from alerts.models import Alert

    alert_id = f"al-browser-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    committed(lambda: Alert.objects.create(
        id=alert_id, type="spread_blowout", severity="high", symbol="MSFT",
        message="MSFT spread 41 bps is 12.0x its 5-minute median", event_time=now, detected_at=now))

    browser.get(stack.url + "/login/?next=/alerts/%3Fsymbol%3DMSFT")
    browser.find_element(By.ID, "id_username").send_keys(USERNAME)
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    wait(browser, lambda d: d.current_url.endswith("/alerts/?symbol=MSFT"), "the alerts page after logging in")
    mark_page(browser)
    row = browser.find_element(By.ID, f"alert-{alert_id}")
    assert row.get_attribute("data-state") == "open"
    row.find_element(By.CSS_SELECTOR, 'button[data-action="acknowledge"]').click()

    # Read in one script: HTMX replaces the row, so a reference to the old one goes stale.
    state = "var row = document.getElementById(arguments[0]); return row && [row.dataset.state, row.textContent];"
    wait(browser, lambda d: (js(d, state, f"alert-{alert_id}") or [None])[0] == "acknowledged",
         "the row to show it acknowledged")
    assert f"by {USERNAME}" in js(browser, state, f"alert-{alert_id}")[1] and same_page(browser)
    assert Alert.objects.select_related("acknowledged_by").get(id=alert_id).acknowledged_by.username == USERNAME
    fits_a_phone(browser, "alerts-phone")
    assert_no_console_errors(browser)


def test_the_pipeline_page_shows_lag_growing_while_a_consumer_is_stopped(stack, browser):
    lag_script = """var row = document.querySelector(
        'tr.group-row[data-consumer="build_candles"][data-topic="market.trades"]');
        return row ? Number(row.dataset.lag) : null;"""
    from streaming.kafka import EventPublisher
    from streaming.topics import TRADES, topic

    browser.get(stack.url + "/pipeline/")
    mark_page(browser)
    assert js(browser, lag_script) is not None
    # A message no consumer can decode: each consumer of market.trades dead-letters it.
    publisher = EventPublisher(name="browser-test")
    publisher.publish(topic(TRADES), b"AAPL", b'{"id": "broken", "price": "not a number"}')
    publisher.flush()
    wait(browser, lambda d: js(d, "var t = document.querySelector('.dead-letters'); return t && t.textContent;")
         and "broken" in js(d, "return document.querySelector('.dead-letters').textContent;"),
         "the dead letter on the page")

    stack.stop("build_candles")
    try:
        grown = wait(browser, lambda d: (js(d, lag_script) or 0) >= 4 * TRADES_PER_SECOND and js(d, lag_script),
                     "build_candles' lag to grow while it is stopped", timeout=60)
        screenshot(browser, "pipeline")
    finally:
        stack.start("build_candles")
    wait(browser, lambda d: js(d, lag_script) is not None and js(d, lag_script) < grown / 2,
         "the lag to shrink once build_candles runs again", timeout=90)
    assert same_page(browser)  # HTMX refreshed the numbers in place
    fits_a_phone(browser, "pipeline-phone")
    assert_no_console_errors(browser)


@contextlib.contextmanager
def server_away(stack, browser):
    """daphne stopped until the block ends, once the page says it is reconnecting."""
    stack.stop("daphne")
    try:
        wait(browser, lambda d: js(d, "return document.getElementById('live-status').textContent;")
             == "reconnecting…", "the reconnecting indicator")
        yield
    finally:
        stack.start("daphne")


def test_the_page_says_it_is_reconnecting_while_the_server_is_away_and_recovers(stack, browser):
    browser.get(stack.url + "/")
    wait(browser, live, "the stream to connect")
    mark_page(browser)
    with server_away(stack, browser):
        pass  # the indicator showing is what this page must do while the server is away
    wait(browser, live, "the stream to reconnect")
    before = last_prices(browser)
    wait(browser, lambda d: any(last_prices(d)[s] != before[s] for s in SYMBOLS), "prices to move again")
    assert same_page(browser)
    # The browser reports each refused reconnection attempt; nothing else may fail.
    assert_no_console_errors(browser, allow=("/ws/stream",))


def test_the_symbol_page_shows_alerts_raised_while_it_was_disconnected(stack, browser):
    from alerts.models import Alert

    browser.get(stack.url + "/symbols/V/")
    wait(browser, live, "the stream to connect")
    # The trades snapshot makes the page reload its tape from the API: let that finish first, or
    # stopping the server fails it (a console error) when the snapshot comes after the open.
    wait(browser, lambda d: js(d, "return performance.getEntriesByType('resource')"
                                  ".some(e => e.name.includes('/api/v1/trades/V'));"), "the trade tape to load")
    mark_page(browser)
    alert_id = f"al-offline-{uuid.uuid4().hex[:8]}"
    with server_away(stack, browser):
        now = datetime.now(UTC)
        committed(lambda: Alert.objects.create(
            id=alert_id, type="stale_feed", severity="medium", symbol="V",
            message="V has not traded for more than 120 s", event_time=now, detected_at=now))
    wait(browser, lambda d: js(d, "return !!document.getElementById(arguments[0]);", f"alert-{alert_id}"),
         "the alert raised meanwhile to appear after the reconnection")
    # In event-time order, newest first: the live detector may raise alerts of its own meanwhile.
    rows = js(browser, "return [...document.querySelectorAll('#alert-rows tr[data-time]')]"
                       ".map(r => [r.id, r.dataset.time]);")
    times = [float(time) for _, time in rows]
    assert f"alert-{alert_id}" in [row_id for row_id, _ in rows] and times == sorted(times, reverse=True)
    assert same_page(browser)
    assert_no_console_errors(browser, allow=("/ws/stream",))


@pytest.mark.parametrize(("page", "stopped", "says"), [
    ("/symbols/AAPL/", "simulate", "no data for"),  # no trade or quote comes on a connection that is fine
    ("/symbols/MSFT/", "build_candles", "no candles for"),  # trades come, the chart does not move
])
def test_the_pill_says_what_stopped_upstream(stack, browser, page, stopped, says):
    browser.get(stack.url + page)
    wait(browser, live, "the stream to connect")
    mark_page(browser)
    pill = "return document.getElementById('live-status').textContent;"
    stack.stop(stopped)
    try:
        wait(browser, lambda d: js(d, pill).startswith(says), f"the pill to say {says!r}")
    finally:
        stack.start(stopped)
    wait(browser, live, "the pill to say live again", timeout=60)
    assert same_page(browser)
    assert_no_console_errors(browser)
