"""The dashboard's live formatting (static/dashboard/decimal.js, run in Node) writes every price,
size and difference exactly as the server's template filters do: the same page never shows one
value two ways, and no value passes through a binary float."""

from __future__ import annotations

import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market.templatetags.dashboard import MISSING, price, quantity, signed_price

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
DECIMAL_JS = Path(__file__).resolve().parents[1] / "static" / "dashboard" / "decimal.js"

# Every value the contract allows (8 places, up to 16 whole digits), signed for differences,
# in the spellings that reach the page: trailing zeros, exponents, whole numbers.
values = st.decimals(min_value=Decimal("-9999999999999999.99999999"), max_value=Decimal("9999999999999999.99999999"),
                     places=8, allow_nan=False, allow_infinity=False)
spellings = values.flatmap(lambda d: st.sampled_from([str(d), f"{d:f}", f"{d.normalize():f}", str(d.normalize())]))


def in_node(calls: list[list[str]]) -> list[str]:
    """Run each [function, argument, ...] through decimal.js."""
    script = (f"const D = require({json.dumps(str(DECIMAL_JS))});"
              "const calls = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "process.stdout.write(JSON.stringify(calls.map(([f, ...args]) => D[f](...args))));")
    result = subprocess.run([NODE, "-e", script], input=json.dumps(calls), capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@settings(max_examples=10, deadline=None)
@given(st.lists(spellings, min_size=1, max_size=100))
def test_prices_and_quantities_read_the_same_live_as_on_the_server(texts):
    calls = [[name, text] for text in texts for name in ("price", "quantity", "signedPrice")]
    expected = [f(text) for text in texts for f in (price, quantity, signed_price)]
    assert in_node(calls) == expected


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(spellings, spellings), min_size=1, max_size=100))
def test_sums_and_differences_are_exact(pairs):
    calls = [[name, a, b] for a, b in pairs for name in ("add", "sub")]
    expected = [text for a, b in pairs for text in (f"{Decimal(a) + Decimal(b):f}", f"{Decimal(a) - Decimal(b):f}")]
    got = in_node(calls)
    assert [Decimal(text) for text in got] == [Decimal(text) for text in expected]
    assert all("e" not in text.lower() and not (("." in text) and text.endswith("0")) for text in got)


def test_the_values_that_floats_got_wrong():
    texts = ["0.00001227", "9999999999999999", "123456789012.12345678", "412", "3405.38033630", "0.00000090"]
    assert in_node([["price", t] for t in texts]) == [
        "0.00001227", "9999999999999999.00", "123456789012.12345678", "412.00", "3405.3803363", "0.0000009"]
    assert in_node([["quantity", "9999999999999999"], ["sub", "0.00001227", "0.00001215"], ["places", "187.50"],
                    ["sign", "-0.00"]]) == ["9,999,999,999,999,999", "0.00000012", 1, 0]


def test_spellings_without_a_leading_digit_or_with_spaces_read_alike():
    texts = [".5", "-.5", "5.", "+0.10", " 7 ", "1E+3", "-0.00"]
    assert in_node([["price", t] for t in texts]) == [price(t) for t in texts] == [
        "0.50", "-0.50", "5.00", "0.10", "7.00", "1000.00", "0.00"]


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "NaN", "Infinity", " ", ".", "-", "1_000", "\u0661\u0662",
                                  "1e99999999999", "0x10"])
def test_what_is_not_a_decimal_shows_as_missing(text):
    assert in_node([["price", text], ["quantity", text]]) == [MISSING, MISSING]
    assert price(text) == quantity(text) == MISSING
