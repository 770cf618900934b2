/* Exact decimals for the dashboard. Prices and sizes come as decimal strings
 * ("0.00001227", "123456789012.12345678") and are shown digit for digit, as
 * market/templatetags/dashboard.py shows them on the server: a binary float
 * would print SHIB at 0.00 and a size of 9999999999999999 as 10,000,000,000,000,000.
 * Sums and differences are taken on scaled BigInts. Text that is not a
 * decimal shows as an em dash. Loaded before live.js; Node can require it
 * (tests/test_dashboard_decimals.py compares it with the server's filters). */
(function (root) {
  "use strict";

  var MISSING = "—";
  // ASCII digits with at least one digit ("5", "5.", ".5"), an optional exponent of at most 4 digits.
  var DECIMAL = /^([+-]?)(?=\.?\d)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d{1,4}))?$/;

  /* {units: BigInt, scale: places} of a decimal text (value = units / 10^scale), or null. */
  function parse(value) {
    if (value === null || value === undefined) return null;
    var match = DECIMAL.exec(String(value).trim());
    if (!match) return null;
    var fraction = match[3] || "";
    var units = BigInt((match[2] || "0") + fraction);
    var scale = fraction.length - Number(match[4] || 0);
    if (scale < 0) {
      units *= BigInt(10) ** BigInt(-scale);
      scale = 0;
    }
    return { units: match[1] === "-" ? -units : units, scale: scale };
  }

  /* [sign, whole digits, fraction digits without trailing zeros] of a parsed decimal. */
  function parts(d) {
    var negative = d.units < BigInt(0);
    var digits = (negative ? -d.units : d.units).toString().padStart(d.scale + 1, "0");
    var whole = digits.slice(0, digits.length - d.scale);
    var fraction = digits.slice(digits.length - d.scale).replace(/0+$/, "");
    return [negative && (whole !== "0" || fraction) ? "-" : "", whole, fraction];
  }

  function withScale(d, scale) {
    return d.units * BigInt(10) ** BigInt(scale - d.scale);
  }

  function combine(a, b, sign) {
    var x = parse(a), y = parse(b);
    if (!x || !y) return null;
    var scale = Math.max(x.scale, y.scale);
    var units = withScale(x, scale) + (sign < 0 ? -withScale(y, scale) : withScale(y, scale));
    return plain({ units: units, scale: scale });
  }

  function plain(d) {
    var p = parts(d);
    return p[0] + p[1] + (p[2] ? "." + p[2] : "");
  }

  function grouped(whole) {
    return whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  var Decimal = {
    /* "a + b", exact, as plain text ("0.3" for "0.1" and "0.2"); null if either is not a decimal. */
    add: function (a, b) { return combine(a, b, 1); },
    /* "a - b", exact. */
    sub: function (a, b) { return combine(a, b, -1); },
    /* -1, 0 or 1; null if not a decimal. */
    sign: function (value) {
      var d = parse(value);
      if (!d) return null;
      return d.units > BigInt(0) ? 1 : d.units < BigInt(0) ? -1 : 0;
    },
    /* Digits after the point once trailing zeros are gone: "187.50" -> 1. */
    places: function (value) {
      var d = parse(value);
      return d ? parts(d)[2].length : 0;
    },
    /* A price: every digit, at least two places, no grouping ("412.00", "0.00001227"). */
    price: function (value) {
      var d = parse(value);
      if (!d) return MISSING;
      var p = parts(d);
      return p[0] + p[1] + "." + p[2].padEnd(2, "0");
    },
    /* A price change: the price with a "+" when it is positive. */
    signedPrice: function (value) {
      var text = Decimal.price(value);
      return Decimal.sign(value) === 1 ? "+" + text : text;
    },
    /* A size or volume: thousands grouped, every decimal digit ("123,456,789,012.12345678"). */
    quantity: function (value) {
      var d = parse(value);
      if (!d) return MISSING;
      var p = parts(d);
      return p[0] + grouped(p[1]) + (p[2] ? "." + p[2] : "");
    },
  };

  if (typeof module === "object" && module.exports) module.exports = Decimal;
  else root.FinStreamDecimal = Decimal;
})(this);
