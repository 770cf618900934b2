"""Rule configuration: defaults, overrides, and errors that say what to fix."""

from __future__ import annotations

import pytest

from alerts.domain.detectors import DEFAULT_RULES, AnomalyEngine
from alerts.domain.rules import PriceSpikeParams, RuleConfig, RuleConfigError, condition_changed, rule_config_from_params

from .factories import trade


def test_the_defaults_are_the_spec():
    by_type = {config.type: config for config in DEFAULT_RULES}
    assert set(by_type) == {"price_spike", "volume_anomaly", "spread_blowout", "crossed_quote", "stale_feed"}
    spike = by_type["price_spike"].params
    assert (spike.threshold_pct, spike.high_pct, spike.critical_pct, spike.window_seconds) == (5, 8, 12, 60)
    volume = by_type["volume_anomaly"].params
    assert (volume.k_sigma, volume.baseline_buckets, volume.method) == (3, 30, "mean")
    assert len({config.rule for config in DEFAULT_RULES}) == 5


def test_params_and_partial_overrides_from_json():
    config = rule_config_from_params(
        rule="spike-fast", type="price_spike", params={"threshold_pct": 4, "window_seconds": 30},
        symbol_overrides={"TSLA": {"threshold_pct": 7.5}}, cooldown_seconds=120,
    )
    assert config.params == PriceSpikeParams(threshold_pct=4.0, window_seconds=30)
    # An override inherits the rule's params, not the type's defaults.
    assert config.params_for("TSLA") == PriceSpikeParams(threshold_pct=7.5, window_seconds=30)
    assert config.params_for("AAPL") is config.params
    assert config.cooldown_seconds == 120


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "price_jump"}, "unknown type 'price_jump'; use one of price_spike"),
        ({"params": {"threshold": 5}}, "unknown parameter 'threshold' for PriceSpikeParams; known: threshold_pct"),
        ({"params": {"threshold_pct": "5"}}, "parameter threshold_pct must be a number, got '5'"),
        ({"params": {"window_seconds": 1.5}}, "parameter window_seconds must be a whole number, got 1.5"),
        ({"params": {"threshold_pct": True}}, "parameter threshold_pct must be a number"),
        ({"params": {"threshold_pct": 0}}, "rule 'r': threshold_pct must be a percentage between 0 and 100"),
        ({"params": {"high_pct": 20}}, "high_pct (20.0) must not exceed critical_pct (12.0)"),
        ({"symbol_overrides": {"tsla": {}}}, "override key 'tsla' is not a symbol"),
        ({"symbol_overrides": {"TSLA": {"window_seconds": 0}}}, "window_seconds must be 1..3600"),
        ({"cooldown_seconds": -1}, "cooldown_seconds must be 0..86400"),
        # JSON the admin's fields accept that is not an object of parameters
        ({"params": [1]}, "params must be a JSON object"),
        ({"params": "x"}, "params must be a JSON object"),
        ({"params": 5}, "params must be a JSON object"),
        ({"symbol_overrides": ["TSLA"]}, "symbol_overrides must be a JSON object"),
        ({"symbol_overrides": {"TSLA": 5}}, "the override for TSLA must be a JSON object"),
    ],
)
def test_a_bad_configuration_names_the_rule_and_the_fix(kwargs, message):
    arguments = {"rule": "r", "type": "price_spike", **kwargs}
    with pytest.raises(RuleConfigError) as error:
        rule_config_from_params(**arguments)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("type", "params", "message"),
    [
        ("volume_anomaly", {"method": "median"}, 'method must be "mean" or "mad"'),
        ("volume_anomaly", {"baseline_buckets": 1}, "baseline_buckets must be 2..1440"),
        ("volume_anomaly", {"epsilon": 0}, "epsilon must be positive"),
        ("volume_anomaly", {"decisive_sigma": -1}, "decisive_sigma must be 0 (off) or positive"),
        ("spread_blowout", {"multiple": 1}, "multiple must be more than 1"),
        ("spread_blowout", {"min_samples": 301}, "min_samples must be 1..window_seconds (300)"),
        ("crossed_quote", {"crossed_severity": "urgent"}, "crossed_severity must be one of low, medium, high"),
        ("stale_feed", {"gap_seconds": 0}, "gap_seconds must be 1..86400"),
    ],
)
def test_each_type_checks_its_params(type, params, message):
    with pytest.raises(RuleConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rule_config_from_params(rule="r", type=type, params=params)


def test_a_config_is_frozen_all_the_way_down():
    config = rule_config_from_params(rule="r", type="price_spike", symbol_overrides={"TSLA": {}})
    with pytest.raises(AttributeError):
        config.rule = "s"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.symbol_overrides["AAPL"] = config.params  # type: ignore[index]


def test_params_of_the_wrong_type_are_refused():
    with pytest.raises(RuleConfigError, match="type volume_anomaly needs VolumeAnomalyParams"):
        RuleConfig(rule="r", type="volume_anomaly", params=PriceSpikeParams())


def test_rule_ids_must_be_unique_and_disabled_rules_do_nothing():
    with pytest.raises(RuleConfigError, match="used twice"):
        AnomalyEngine([DEFAULT_RULES[0], DEFAULT_RULES[0]])
    disabled = rule_config_from_params(rule="price-spike", type="price_spike", enabled=False)
    assert AnomalyEngine([disabled]).on_trades([trade("AAPL", 0, "100"), trade("AAPL", 1, "200")]) == []


def _spike(**fields) -> RuleConfig:
    return rule_config_from_params(rule="price-spike", type="price_spike", **fields)


@pytest.mark.parametrize(("before", "after", "changed_for_aapl", "changed_for_msft"), [
    (None, _spike(), True, True),  # a new rule
    (_spike(enabled=False), _spike(), True, True),  # enabled
    (_spike(), _spike(params={"threshold_pct": 3}), True, True),  # lowered for every symbol
    (_spike(), _spike(symbol_overrides={"AAPL": {"threshold_pct": 3}}), True, False),  # for one
    (_spike(), _spike(cooldown_seconds=60), False, False),  # episodes group otherwise; the condition is the same
    (_spike(), _spike(), False, False),
    (rule_config_from_params(rule="price-spike", type="volume_anomaly"), _spike(), True, True),  # another type
])
def test_a_condition_changes_for_a_symbol_where_the_rule_may_now_hold_where_it_did_not(
        before, after, changed_for_aapl, changed_for_msft):
    assert condition_changed(before, after, "AAPL") is changed_for_aapl
    assert condition_changed(before, after, "MSFT") is changed_for_msft
