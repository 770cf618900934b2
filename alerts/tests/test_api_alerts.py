"""GET /api/v1/alerts with every filter, and the authenticated writes
POST /api/v1/alerts/{id}/acknowledge and /resolve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from alerts.models import Alert
from market.services import symbols_seed

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def make_alert(i: int, *, symbol="AAPL", severity="high", type="price_spike", seconds=None, **extra) -> Alert:
    ts = T0 + timedelta(seconds=i if seconds is None else seconds)
    return Alert.objects.create(id=f"al-{i:024x}", type=type, severity=severity, symbol=symbol,
                                message=f"alert {i}", observed={"n": i}, event_time=ts, **{"detected_at": ts, **extra})


@pytest.fixture
def alerts():
    symbols_seed(tickers=["AAPL", "MSFT", "TSLA"])
    made = [
        make_alert(1, symbol="AAPL", severity="high", type="price_spike"),
        make_alert(2, symbol="MSFT", severity="low", type="volume_anomaly"),
        make_alert(3, symbol="AAPL", severity="critical", type="stale_feed", acknowledged_at=T0),
        make_alert(4, symbol="TSLA", severity="medium", type="spread_blowout", acknowledged_at=T0, resolved_at=T0),
        make_alert(5, symbol="AAPL", severity="high", type="crossed_quote"),
    ]
    return made


def ids(body) -> list[int]:
    return [int(alert["id"][3:], 16) for alert in body["alerts"]]


def get(url, status=200) -> dict:
    response = APIClient().get(url)
    assert response.status_code == status, response.content[:400]
    return response.json()


def test_alerts_are_newest_first_with_every_field(alerts):
    body = get("/api/v1/alerts")
    assert ids(body) == [5, 4, 3, 2, 1] and body["next"] is None
    assert body["alerts"][1] == {
        "id": alerts[3].id, "rule": None, "type": "spread_blowout", "severity": "medium", "symbol": "TSLA",
        "message": "alert 4", "observed": {"n": 4}, "time": "2026-03-02T14:30:04Z",
        "detected_at": "2026-03-02T14:30:04Z", "state": "resolved", "acknowledged_at": "2026-03-02T14:30:00Z",
        "acknowledged_by": None, "resolved_at": "2026-03-02T14:30:00Z", "resolved_by": None,
    }


@pytest.mark.parametrize(("query", "expected"), [
    ("symbol=AAPL", [5, 3, 1]),
    ("symbol=aapl&severity=high", [5, 1]),
    ("severity=critical", [3]),
    ("type=volume_anomaly", [2]),
    ("state=open", [5, 2, 1]),
    ("state=acknowledged", [3]),
    ("state=resolved", [4]),
    ("start=2026-03-02T14:30:02Z&end=2026-03-02T14:30:04Z", [3, 2]),
    (f"start={int((T0 + timedelta(seconds=4)).timestamp() * 1000)}", [5, 4]),
    ("sort=asc&limit=2", [1, 2]),
])
def test_alert_filters(alerts, query, expected):
    assert ids(get(f"/api/v1/alerts?{query}")) == expected


def test_alerts_of_an_unknown_symbol_are_404(alerts):
    for symbol in ("ZZZZ", "A" * 17, "X" * 300):
        assert get(f"/api/v1/alerts?symbol={symbol}", 404)["error"]["code"] == "unknown_symbol"


def test_alert_pages_follow_through_equal_times(alerts):
    for i in range(6, 16):
        make_alert(i, seconds=100)  # ten alerts at the same instant
    url, seen = "/api/v1/alerts?limit=3", []
    while url:
        body = get(url)
        seen += ids(body)
        url = body["next"] and urlsplit(body["next"])._replace(scheme="", netloc="").geturl()
    assert seen == list(range(15, 0, -1))


def test_alerts_detected_since_a_time_include_those_of_older_event_times(alerts):
    # A detector catching up detects at 14:40 an alert of 14:30:00.5: after an alert detected at
    # 14:35 (of 14:30:05), a client that missed the rest asks for what was detected since.
    last_seen = make_alert(6, seconds=5, detected_at=T0 + timedelta(minutes=5))
    make_alert(7, seconds=0.5, detected_at=T0 + timedelta(minutes=10))
    since = last_seen.detected_at.isoformat().replace("+00:00", "Z")
    assert ids(get(f"/api/v1/alerts?detected_since={since}&sort=asc")) == [7, 6]
    first = get(f"/api/v1/alerts?detected_since={since}&limit=1")
    assert ids(first) == [6] and "detected_since=" in first["next"]
    assert ids(get(urlsplit(first["next"])._replace(scheme="", netloc="").geturl())) == [7]
    assert ids(get(f"/api/v1/alerts?start={since}")) == []  # start is the event time
    error = get("/api/v1/alerts?detected_since=yesterday", 400)["error"]
    assert error["code"] == "invalid_parameter" and error["message"].startswith("detected_since:")


def test_an_alert_cursor_is_refused_under_other_filters(alerts):
    cursor = parse_qs(urlsplit(get("/api/v1/alerts?symbol=aapl&limit=1")["next"]).query)["cursor"][0]
    assert ids(get(f"/api/v1/alerts?symbol=AAPL&limit=1&cursor={cursor}")) == [3]  # the symbol as it was written
    for other in ("", "symbol=MSFT&", "symbol=AAPL&severity=high&"):
        error = get(f"/api/v1/alerts?{other}limit=1&cursor={cursor}", 400)["error"]
        assert error["code"] == "invalid_cursor" and "another symbol, interval or filter" in error["message"]


@pytest.mark.parametrize(("query", "field"), [
    ("severity=urgent", "severity"), ("type=meteor", "type"), ("state=closed", "state"), ("limit=0", "limit"),
    ("limit=100000", "limit"), ("limit=-1", "limit"), ("start=not-a-date", "start"), ("sort=up", "sort"),
    ("limit=1&limit=2", "limit"), ("sort=desc&severity=high&sort=asc", "sort"),
])
def test_bad_alert_parameters_are_400_listing_what_is_allowed(alerts, query, field):
    error = get(f"/api/v1/alerts?{query}", 400)["error"]
    assert error["code"] == "invalid_parameter" and error["message"].startswith(f"{field}:")


# --- writes --------------------------------------------------------------------------------
@pytest.fixture
def user():
    return get_user_model().objects.create_user(username="ops", password="pw-for-tests-only")


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_writes_need_a_user(alerts, action):
    response = APIClient().post(f"/api/v1/alerts/{alerts[0].id}/{action}")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["code"] == "not_authenticated"
    assert "Token" in response.json()["error"]["message"]
    alerts[0].refresh_from_db()
    assert alerts[0].acknowledged_at is None


@pytest.mark.parametrize("url", ["/api/v1/alerts", "/api/v1/symbols", "/api/v1/quotes/AAPL", "/api/v1/candles/AAPL"])
def test_wrong_credentials_are_401_on_reads_too(alerts, user, url):
    for credentials in ("Token bogus", "Bearer bogus", "Basic b3BzOndyb25n"):  # ops:wrong
        response = APIClient().get(url, HTTP_AUTHORIZATION=credentials)
        assert response.status_code == 401, (credentials, response.content)
        assert response["WWW-Authenticate"] == "Token"
        assert response.json()["error"]["code"] == "authentication_failed"


@pytest.mark.parametrize("scheme", ["Token", "Bearer"])
def test_acknowledge_with_a_token_is_idempotent(alerts, user, scheme):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {Token.objects.create(user=user).key}")
    first = client.post(f"/api/v1/alerts/{alerts[0].id}/acknowledge")
    assert first.status_code == 200
    assert (first.json()["state"], first.json()["acknowledged_by"]) == ("acknowledged", "ops")
    again = client.post(f"/api/v1/alerts/{alerts[0].id}/acknowledge")
    assert again.json()["acknowledged_at"] == first.json()["acknowledged_at"]
    assert ids(get("/api/v1/alerts?state=acknowledged")) == [3, 1]


def test_resolve_with_a_session_acknowledges_too(alerts, user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    without_csrf = client.post(f"/api/v1/alerts/{alerts[1].id}/resolve")
    assert without_csrf.status_code == 403 and without_csrf.json()["error"]["code"] == "permission_denied"
    client.get("/admin/login/")  # sets the CSRF cookie, as a browser page would
    response = client.post(f"/api/v1/alerts/{alerts[1].id}/resolve",
                           HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["resolved_by"], body["acknowledged_by"]) == ("resolved", "ops", "ops")


def test_writing_an_unknown_alert_is_404(user):
    client = APIClient()
    client.force_authenticate(user)
    for url in ("/api/v1/alerts/al-nope/acknowledge", "/api/v1/alerts/al%E2%82%AC/resolve"):
        response = client.post(url)
        assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_alert"
    response = client.post("/api/v1/alerts/al%00/resolve")  # no id has a NUL: refused before any lookup
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"


def test_reading_alerts_needs_no_user_but_writing_by_get_is_refused(alerts):
    # A method the endpoint does not take is 405 whoever asks: no log-in would make it work.
    for method in ("get", "put", "delete"):
        response = getattr(APIClient(), method)(f"/api/v1/alerts/{alerts[0].id}/acknowledge")
        assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed", method
    assert APIClient().post(f"/api/v1/alerts/{alerts[0].id}/acknowledge").status_code == 401


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("second", ["acknowledge", "resolve"])
def test_two_people_acknowledging_at_once_are_both_told_the_first(second):
    # The second request reads the alert while the first one's transaction holds it: a plain
    # read-then-save let the second overwrite the first's who and when, and told each one it won.
    import threading

    from django.db import connections, transaction

    from alerts import services
    from streaming.testing import until_a_transaction_waits_for_a_lock

    first, other = (get_user_model().objects.create_user(username=name) for name in ("first", "other"))
    alert = make_alert(1)
    answers = []

    def write():
        try:
            answers.append(getattr(services, f"alert_{second}")(alert=Alert.objects.get(pk=alert.pk), user=other))
        finally:
            connections.close_all()

    with transaction.atomic():
        services.alert_acknowledge(alert=Alert.objects.get(pk=alert.pk), user=first)
        writer = threading.Thread(target=write)
        writer.start()
        until_a_transaction_waits_for_a_lock()  # the other write, for this transaction's row lock
    writer.join(10)
    stored = Alert.objects.get(pk=alert.pk)
    told = answers[0]
    assert stored.acknowledged_by == told.acknowledged_by == first
    assert stored.acknowledged_at == told.acknowledged_at
    if second == "resolve":
        assert stored.resolved_by == told.resolved_by == other
