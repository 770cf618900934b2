"""Typed readers for settings from the environment.

A malformed value stops start-up with a message that names the variable and
what it should look like, instead of a traceback deep inside a library.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from streaming.schemas import SYMBOL_RULE, is_valid_symbol, symbol_upper

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} must be at most {maximum}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_symbols(name: str, default: str) -> list[str]:
    """A comma-separated list of symbols, upper-cased; each must match the contract's pattern."""
    symbols = [symbol_upper(item) for item in env_list(name, default)]
    bad = [symbol for symbol in symbols if not is_valid_symbol(symbol)]
    if bad or not symbols:
        problem = f"{name}: {bad} are not symbols" if bad else f"{name} names no symbol"
        raise ImproperlyConfigured(f"{problem}: give them comma-separated, each {SYMBOL_RULE} (AAPL,BRK.B,BTC-USD)")
    return symbols


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip()
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a valid URL: expected {' or '.join(s + '://host…' for s in schemes)}"
        )
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} has an invalid port") from None
    return value


def database_from_url(name: str, url: str) -> dict[str, object]:
    """Django DATABASES entry from a postgresql:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(f"{name} must be a postgresql:// URL, got {url!r}")
    database = parts.path.lstrip("/")
    if not database:
        raise ImproperlyConfigured(f"{name}={url!r} names no database: add /dbname to the URL")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": database,
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or 5432),
    }
