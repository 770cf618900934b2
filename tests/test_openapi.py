"""The OpenAPI schema (/api/schema/), its interactive docs (/api/docs/), and a
schemathesis run over the schema against the app in-process: no 5xx, no
status code, content type or body the schema does not document."""

from __future__ import annotations

import re
from io import StringIO
from datetime import timedelta
from decimal import Decimal

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from alerts.models import Alert
from market.services import LATEST_QUOTE_KEY, latest_events_store, symbols_seed
from market.tests.api_data import T0, make_trades, store_trades
from streaming.schemas import Quote

SPEC_PATHS = {
    "/api/v1/symbols", "/api/v1/quotes/{symbol}", "/api/v1/trades/{symbol}", "/api/v1/candles/{symbol}",
    "/api/v1/market-summary", "/api/v1/alerts", "/api/v1/alerts/{alert_id}/acknowledge",
    "/api/v1/alerts/{alert_id}/resolve",
}


@pytest.mark.django_db
def test_the_schema_documents_every_endpoint_of_the_spec():
    response = Client().get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert SPEC_PATHS <= set(schema["paths"])
    trades = {p["name"] for p in schema["paths"]["/api/v1/trades/{symbol}"]["get"]["parameters"]}
    assert trades == {"symbol", "limit", "start", "end", "sort", "cursor"}
    candles = {p["name"] for p in schema["paths"]["/api/v1/candles/{symbol}"]["get"]["parameters"]}
    assert candles == {"symbol", "interval", "limit", "start", "end", "sort", "cursor"}
    alerts = {p["name"] for p in schema["paths"]["/api/v1/alerts"]["get"]["parameters"]}
    assert alerts == {"symbol", "severity", "type", "state", "detected_since", "limit", "start", "end", "sort", "cursor"}
    price = schema["components"]["schemas"]["Trade"]["properties"]["price"]
    assert price["type"] == "string" and price["format"] == "decimal"  # exact decimal strings


def test_the_schema_is_generated_without_a_warning():
    # A warning is a schema that says less than the views do (two security schemes of one name:
    # a client generator would send the wrong header).
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", stdout=StringIO(), stderr=StringIO())


@pytest.mark.django_db
def test_the_errors_any_request_may_get_are_in_the_schema_with_their_headers():
    client = Client()
    schema = client.get("/api/schema/?format=json").json()
    error_fields = set(schema["components"]["schemas"]["ErrorBody"]["properties"])
    for status, response in {406: client.get("/api/v1/symbols", HTTP_ACCEPT="text/plain"),
                             401: client.get("/api/v1/symbols", HTTP_AUTHORIZATION="Token wrong"),
                             400: client.get("/api/v1/symbols", HTTP_HOST="evil.example")}.items():
        assert response.status_code == status and set(response.json()["error"]) <= error_fields
    for path in SPEC_PATHS:
        for operation in schema["paths"][path].values():
            responses = operation["responses"]
            assert {"400", "401", "405", "406", "429", "503"} <= set(responses), path
            assert "Retry-After" in responses["429"]["headers"] and "Retry-After" in responses["503"]["headers"]
            # An empty parameter is no parameter (docs/api.md): the schema allows it.
            for parameter in operation.get("parameters", ()):
                if parameter["in"] == "query":
                    assert parameter["allowEmptyValue"] and "minLength" not in parameter["schema"], parameter


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_the_interactive_docs_load_their_assets_from_this_server(path):
    page = Client().get(path)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.content.decode())
    assert assets and all(url.startswith("/static/drf_spectacular_sidecar/") for url in assets), assets
    for url in assets:
        assert finders.find(url.removeprefix("/static/")), url  # shipped by drf-spectacular-sidecar


# --- schemathesis --------------------------------------------------------------------------
# Loaded at collection: the schema view needs no database. (schemathesis'
# lazy `from_fixture` loader does not run on pytest 9.)
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


@pytest.fixture
def api_data(db, redis_clean, settings):
    settings.API_SYMBOLS_CACHE_SECONDS = 0
    # Keep the test's database connection open across requests: Django's
    # request signals would close it (its test client disconnects them too).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    symbols_seed(tickers=["AAPL", "MSFT"])
    store_trades(make_trades(30, every=timedelta(seconds=20)))
    latest_events_store(key_format=LATEST_QUOTE_KEY, events=[Quote(
        id="q1", symbol="AAPL", ts=T0, bid=Decimal("187.2"), ask=Decimal("187.25"), bid_size=Decimal(1),
        ask_size=Decimal(2))])
    Alert.objects.create(id="al-000000000000000000000001", type="price_spike", severity="high", symbol="AAPL",
                         message="spike", observed={"change_pct": "8.1"}, event_time=T0, detected_at=T0)
    user = get_user_model().objects.create_user(username="schemathesis")
    yield Token.objects.create(user=user).key
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_the_api_never_answers_5xx_nor_outside_its_schema(case, api_data):
    token = api_data
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    case.call_and_validate(checks=checks)
    if case.path_parameters and "symbol" in case.path_parameters:  # again on a known symbol: the query matters
        case.path_parameters["symbol"] = "AAPL"
        case.call_and_validate(checks=checks)
    if case.method == "POST":  # the writes again, as a user
        case.call_and_validate(checks=checks, headers={"Authorization": f"Token {token}"})
