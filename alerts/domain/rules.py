"""Rule configuration of the anomaly detectors: what each rule type measures and its thresholds.

Pure: no Django, no I/O. An ``AlertRule`` row (slug, type, enabled, params,
symbol_overrides, cooldown_seconds) becomes a ``RuleConfig`` through
``rule_config_from_params``, which checks every parameter and says how to fix a
bad one. ``docs/alerts.md`` explains each parameter with the exact condition it
feeds.

Every threshold is strict: a rule fires when the measured value is *more than*
its threshold, and a severity level is reached when the value is *more than*
that level's bound ("more than 5% in a minute", "more than 3 sigma").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeAlias

from streaming.schemas import Severity, is_valid_symbol

__all__ = [
    "DEFAULT_RULES",
    "SEVERITIES",
    "CrossedQuoteParams",
    "Params",
    "PriceSpikeParams",
    "RuleConfig",
    "RuleConfigError",
    "RuleType",
    "SpreadBlowoutParams",
    "StaleFeedParams",
    "VolumeAnomalyParams",
    "condition_changed",
    "rule_config_from_params",
]

RuleType = Literal["price_spike", "volume_anomaly", "spread_blowout", "crossed_quote", "stale_feed"]

SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")
"""Severities, lowest first; an alert escalates only upwards in this order."""


class RuleConfigError(ValueError):
    """A rule's configuration is unusable; the message names the rule, the parameter and the fix."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise RuleConfigError(message)


@dataclass(frozen=True, slots=True)
class PriceSpikeParams:
    """Fires when a trade's price is more than ``threshold_pct`` above the lowest or below the
    highest price of the trailing window (the trade's own UTC second and the ``window_seconds``
    whole seconds before it)."""

    threshold_pct: float = 5.0
    high_pct: float = 8.0
    critical_pct: float = 12.0
    window_seconds: int = 60

    def __post_init__(self) -> None:
        for name in ("threshold_pct", "high_pct", "critical_pct"):
            value = getattr(self, name)
            _require(0 < value < 100, f"{name} must be a percentage between 0 and 100 (exclusive), got {value}")
        _require(self.high_pct <= self.critical_pct,
                 f"high_pct ({self.high_pct}) must not exceed critical_pct ({self.critical_pct})")
        _require(1 <= self.window_seconds <= 3600, f"window_seconds must be 1..3600, got {self.window_seconds}")


@dataclass(frozen=True, slots=True)
class VolumeAnomalyParams:
    """Fires when a completed 1-minute bucket's volume is more than ``k_sigma`` spreads above the
    centre of the symbol's preceding ``baseline_buckets`` non-empty completed buckets and, when
    ``min_ratio`` is not 0, also more than ``min_ratio`` times that centre (relative volume).

    ``method`` "mean" uses mean and population standard deviation; "mad" uses median and
    1.4826 * median absolute deviation. The spread is floored at ``epsilon * centre`` so a flat
    baseline (spread 0) does not turn every small change into an alert. ``grace_seconds`` is how
    long after a bucket's end ``advance`` waits before closing it for a symbol that has not traded
    since (cross-partition skew allowance).

    ``min_ratio`` defaults to 5 (0 turns it off). A k-sigma test alone
    fires on about one ordinary minute in a hundred, because a minute's volume is the sum of a
    few dozen to a few hundred heavy-tailed trade sizes, far from normal, and 30 minutes
    estimate its mean and sigma loosely. On a simulated day of ten symbols at 30 trades/s it
    raised 208 false alerts beside 109 injected 15-25x bursts (precision 36%); with "and more
    than 5x the centre" 0 to 3 a day over six seeds (precision >= 97%), recall 100% either way
    (bench/anomaly_quality.py). A minute 1.5x its usual volume is nothing a user can act on.

    ``decisive_sigma`` (20; 0 turns it off) waives ``min_ratio`` for a minute that many spreads
    above the centre: against a steady baseline a minute of 3 or 4 times the usual volume is
    20 to 30 sigma out (the epsilon floor caps it there), far past anything the heavy tails of
    ordinary minutes reach (18 sigma at most over four simulated days)."""

    k_sigma: float = 3.0
    high_sigma: float = 6.0
    critical_sigma: float = 10.0
    baseline_buckets: int = 30
    method: str = "mean"
    epsilon: float = 0.1
    grace_seconds: int = 10
    min_ratio: float = 5.0
    decisive_sigma: float = 20.0

    def __post_init__(self) -> None:
        _require(self.min_ratio == 0 or 1 <= self.min_ratio <= 1000,
                 f"min_ratio must be 0 (off) or a multiple of the baseline's centre between 1 and 1000, "
                 f"got {self.min_ratio}")
        _require(self.decisive_sigma >= 0, f"decisive_sigma must be 0 (off) or positive, got {self.decisive_sigma}")
        for name in ("k_sigma", "high_sigma", "critical_sigma", "epsilon"):
            value = getattr(self, name)
            _require(value > 0, f"{name} must be positive, got {value}")
        _require(self.high_sigma <= self.critical_sigma,
                 f"high_sigma ({self.high_sigma}) must not exceed critical_sigma ({self.critical_sigma})")
        _require(2 <= self.baseline_buckets <= 1440,
                 f"baseline_buckets must be 2..1440 (minutes of baseline), got {self.baseline_buckets}")
        _require(self.method in ("mean", "mad"), f'method must be "mean" or "mad", got {self.method!r}')
        _require(0 <= self.grace_seconds <= 600, f"grace_seconds must be 0..600, got {self.grace_seconds}")


@dataclass(frozen=True, slots=True)
class SpreadBlowoutParams:
    """Fires when a quote's spread in basis points is more than ``multiple`` times the median of
    the per-second spread samples of the preceding ``window_seconds`` seconds, once at least
    ``min_samples`` samples exist."""

    multiple: float = 5.0
    high_multiple: float = 10.0
    critical_multiple: float = 20.0
    window_seconds: int = 300
    min_samples: int = 60

    def __post_init__(self) -> None:
        for name in ("multiple", "high_multiple", "critical_multiple"):
            value = getattr(self, name)
            _require(value > 1, f"{name} must be more than 1 (a multiple of the usual spread), got {value}")
        _require(self.high_multiple <= self.critical_multiple,
                 f"high_multiple ({self.high_multiple}) must not exceed critical_multiple ({self.critical_multiple})")
        _require(10 <= self.window_seconds <= 3600, f"window_seconds must be 10..3600, got {self.window_seconds}")
        _require(1 <= self.min_samples <= self.window_seconds,
                 f"min_samples must be 1..window_seconds ({self.window_seconds}), got {self.min_samples}")


@dataclass(frozen=True, slots=True)
class CrossedQuoteParams:
    """Fires on a crossed quote (bid > ask) and, if ``include_locked``, a locked one (bid == ask)."""

    include_locked: bool = True
    locked_severity: str = "medium"
    crossed_severity: str = "high"

    def __post_init__(self) -> None:
        for name in ("locked_severity", "crossed_severity"):
            value = getattr(self, name)
            _require(value in SEVERITIES, f"{name} must be one of {', '.join(SEVERITIES)}, got {value!r}")


@dataclass(frozen=True, slots=True)
class StaleFeedParams:
    """Fires when a symbol has had no trade for more than ``gap_seconds`` of market event time
    while other symbols kept trading."""

    gap_seconds: int = 120
    severity: str = "high"

    def __post_init__(self) -> None:
        _require(1 <= self.gap_seconds <= 86_400, f"gap_seconds must be 1..86400, got {self.gap_seconds}")
        _require(self.severity in SEVERITIES, f"severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")


Params: TypeAlias = PriceSpikeParams | VolumeAnomalyParams | SpreadBlowoutParams | CrossedQuoteParams | StaleFeedParams

PARAMS_BY_TYPE: Mapping[str, type[Params]] = MappingProxyType({
    "price_spike": PriceSpikeParams,
    "volume_anomaly": VolumeAnomalyParams,
    "spread_blowout": SpreadBlowoutParams,
    "crossed_quote": CrossedQuoteParams,
    "stale_feed": StaleFeedParams,
})


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """One configured rule. ``rule`` is the stable id (the ``AlertRule`` slug) that goes into every
    alert id, so renaming a rule starts new alert ids.

    ``cooldown_seconds``: an episode ends once the rule's condition has not held for this many
    seconds of event time; a new alert needs a new episode. ``symbol_overrides`` maps a symbol
    to complete params for it (``rule_config_from_params`` builds them from partial dicts).
    """

    rule: str
    type: RuleType
    params: Params
    enabled: bool = True
    cooldown_seconds: int = 300
    symbol_overrides: Mapping[str, Params] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(isinstance(self.rule, str) and 0 < len(self.rule) <= 64,
                 f"rule id must be a non-empty string of at most 64 characters, got {self.rule!r}")
        expected = PARAMS_BY_TYPE.get(self.type)
        _require(expected is not None, f"rule {self.rule!r}: unknown type {self.type!r}; "
                 f"use one of {', '.join(PARAMS_BY_TYPE)}")
        _require(isinstance(self.params, expected),  # type: ignore[arg-type]
                 f"rule {self.rule!r}: type {self.type} needs {expected.__name__}, got {type(self.params).__name__}")
        _require(isinstance(self.cooldown_seconds, int) and 0 <= self.cooldown_seconds <= 86_400,
                 f"rule {self.rule!r}: cooldown_seconds must be 0..86400, got {self.cooldown_seconds!r}")
        for symbol, params in self.symbol_overrides.items():
            _require(is_valid_symbol(symbol), f"rule {self.rule!r}: override key {symbol!r} is not a symbol")
            _require(isinstance(params, expected),  # type: ignore[arg-type]
                     f"rule {self.rule!r}: override for {symbol} must be {expected.__name__}")
        # Frozen all the way down: the engine caches per-symbol params, so a config must not change under it.
        object.__setattr__(self, "symbol_overrides", MappingProxyType(dict(self.symbol_overrides)))

    def params_for(self, symbol: str) -> Params:
        return self.symbol_overrides.get(symbol, self.params)


def condition_changed(before: RuleConfig | None, after: RuleConfig, symbol: str) -> bool:
    """Whether ``after`` may hold where ``before`` (the same rule id's config, None if there was
    none) did not for ``symbol``: the rule is new, enabled, of another type, or its params for
    the symbol differ. (A cooldown changes only how episodes group, not when the condition holds.)"""
    return (before is None or not before.enabled or before.type != after.type
            or before.params_for(symbol) != after.params_for(symbol))


def _coerce(rule: str, cls: type, name: str, value: object) -> object:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise RuleConfigError(
            f"rule {rule!r}: unknown parameter {name!r} for {cls.__name__}; known: {', '.join(fields)}"
        )
    default = fields[name].default
    kind = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}[type(default)]
    bad = RuleConfigError(f"rule {rule!r}: parameter {name} must be {kind}, got {value!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad
        if isinstance(default, int):
            if value != int(value):
                raise bad
            return int(value)
        return float(value)
    if not isinstance(value, str):
        raise bad
    return value


def _params(rule: str, base: Params, values: Mapping[str, object]) -> Params:
    changes = {name: _coerce(rule, type(base), name, value) for name, value in values.items()}
    try:
        return dataclasses.replace(base, **changes)
    except RuleConfigError as error:
        raise RuleConfigError(f"rule {rule!r}: {error}") from None


def _mapping(rule: str, what: str, value: object, example: str) -> Mapping:
    """A JSON object, as an AlertRule row's JSON fields must hold (an empty value counts as {})."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RuleConfigError(f"rule {rule!r}: {what} must be a JSON object such as {example}, got {value!r:.60}")
    return value


def rule_config_from_params(
    *,
    rule: str,
    type: str,
    params: Mapping[str, object] | None = None,
    symbol_overrides: Mapping[str, Mapping[str, object]] | None = None,
    enabled: bool = True,
    cooldown_seconds: int = 300,
) -> RuleConfig:
    """Build a ``RuleConfig`` from JSON-shaped values (an ``AlertRule`` row's fields).

    Missing params take the type's defaults; an override is partial and inherits the rule's
    params (``{"TSLA": {"threshold_pct": 8}}``). Raises ``RuleConfigError`` naming the rule and
    the parameter for an unknown type or parameter, a wrongly typed value or an invalid one.
    """
    cls = PARAMS_BY_TYPE.get(type)
    if cls is None:
        raise RuleConfigError(f"rule {rule!r}: unknown type {type!r}; use one of {', '.join(PARAMS_BY_TYPE)}")
    base = _params(rule, cls(), _mapping(rule, "params", params, '{"threshold_pct": 5}'))
    overrides = {symbol: _params(rule, base, _mapping(rule, f"the override for {symbol}", values, "{}"))
                 for symbol, values in _mapping(rule, "symbol_overrides", symbol_overrides,
                                                '{"TSLA": {"threshold_pct": 8}}').items()}
    return RuleConfig(rule=rule, type=type, params=base, enabled=enabled,  # type: ignore[arg-type]
                      cooldown_seconds=cooldown_seconds, symbol_overrides=overrides)


DEFAULT_RULES: tuple[RuleConfig, ...] = (
    RuleConfig(rule="price-spike", type="price_spike", params=PriceSpikeParams()),
    RuleConfig(rule="volume-anomaly", type="volume_anomaly", params=VolumeAnomalyParams()),
    RuleConfig(rule="spread-blowout", type="spread_blowout", params=SpreadBlowoutParams()),
    RuleConfig(rule="crossed-quote", type="crossed_quote", params=CrossedQuoteParams(), cooldown_seconds=60),
    RuleConfig(rule="stale-feed", type="stale_feed", params=StaleFeedParams()),
)
"""One rule of each type with the spec's thresholds: price moves of more than 5% in a minute
(high above 8%, critical above 12%), 1-minute volume more than 3 sigma above its 30-minute
baseline and more than 5x its mean, spreads more than 5x their 5-minute median, crossed or
locked quotes, and symbols silent for more than 2 minutes while the market trades."""
