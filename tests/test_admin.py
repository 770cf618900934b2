"""Django admin as an operator uses it: what it lets through must be what the consumers and the API
accept, and nothing there can hide or fork stored data."""

import json

import pytest

from alerts.models import AlertRule
from alerts.services import alert_rules_seed
from market.models import Symbol

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("ops", "ops@example.com", "pw"))
    return client


def rule_form(rule: AlertRule, **changes) -> dict:
    form = {"slug": rule.slug, "type": rule.type, "enabled": "on", "params": json.dumps(rule.params),
            "symbol_overrides": json.dumps(rule.symbol_overrides), "cooldown_seconds": rule.cooldown_seconds}
    form.update(changes)
    return form


@pytest.mark.parametrize(("params", "message"), [
    ({"bogus_key": 1}, "unknown parameter &#x27;bogus_key&#x27;"),
    ({"threshold_pct": -5}, "threshold_pct must be a percentage between 0 and 100"),
    ({"threshold_pct": "abc"}, "parameter threshold_pct must be a number"),
])
def test_a_rule_the_detector_would_refuse_is_not_saved(operator, params, message):
    alert_rules_seed()
    rule = AlertRule.objects.get(slug="price-spike")
    before = rule.params
    response = operator.post(f"/admin/alerts/alertrule/{rule.pk}/change/", rule_form(rule, params=json.dumps(params)))
    assert response.status_code == 200  # the form again, with the error
    assert message in response.content.decode()
    rule.refresh_from_db()
    assert rule.params == before


def test_a_valid_rule_change_is_saved(operator):
    alert_rules_seed()
    rule = AlertRule.objects.get(slug="price-spike")
    params = {**rule.params, "threshold_pct": 7}
    response = operator.post(f"/admin/alerts/alertrule/{rule.pk}/change/", rule_form(rule, params=json.dumps(params)))
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.params["threshold_pct"] == 7


@pytest.mark.parametrize("ticker", ["bad sym", "aapl", "ÄÖÜ", "-X"])
def test_a_symbol_the_feeds_could_never_publish_cannot_be_added(operator, ticker):
    response = operator.post("/admin/market/symbol/add/", {"ticker": ticker, "name": "", "active": "on"})
    assert response.status_code == 200
    assert "is not a symbol" in response.content.decode()
    assert not Symbol.objects.filter(ticker=ticker).exists()


def test_a_symbol_can_be_added_named_and_hidden_but_not_renamed_or_deleted(operator):
    assert operator.post("/admin/market/symbol/add/", {"ticker": "BRK.B", "name": "", "active": "on"}).status_code == 302
    response = operator.post("/admin/market/symbol/BRK.B/change/",
                             {"ticker": "BRK-B", "name": "Berkshire Hathaway B"})  # "active" unticked
    assert response.status_code == 302
    assert list(Symbol.objects.filter(ticker__startswith="BRK").values_list("ticker", "name", "active")) == [
        ("BRK.B", "Berkshire Hathaway B", False)]
    assert operator.get("/admin/market/symbol/BRK.B/delete/").status_code == 403


def test_null_params_mean_the_defaults_and_no_overrides(operator):
    alert_rules_seed()
    rule = AlertRule.objects.get(slug="price-spike")
    response = operator.post(f"/admin/alerts/alertrule/{rule.pk}/change/",
                             rule_form(rule, params="null", symbol_overrides="null"))
    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.params, rule.symbol_overrides) == ({}, {})


def test_params_that_are_not_an_object_are_refused_too(operator):
    alert_rules_seed()
    rule = AlertRule.objects.get(slug="price-spike")
    response = operator.post(f"/admin/alerts/alertrule/{rule.pk}/change/", rule_form(rule, params="[1]"))
    assert response.status_code == 200
    assert "params must be a JSON object" in response.content.decode()
