/* Market overview: live last price (flashing on each tick), 24h change,
 * volume, bid/ask and the last hour's sparkline of every row; client-side
 * sorting by the column headers (the same links sort on the server without
 * JavaScript). DOM writes are batched to one per animation frame. */
(function () {
  "use strict";
  var table = document.getElementById("market");
  if (!table || !window.FinStream) return;
  var fs = window.FinStream;
  var fmt = fs.fmt;
  var sparkWidth = Number(table.dataset.sparkWidth);
  var sparkHeight = Number(table.dataset.sparkHeight);
  var sparkSeconds = Number(table.dataset.sparkMinutes) * 60;

  var rows = new Map();
  table.querySelectorAll("tbody tr[data-symbol]").forEach(function (tr) {
    var points = (tr.querySelector("svg.spark").dataset.points || "").split(" ").filter(Boolean).map(function (pair) {
      var parts = pair.split(":");
      return [Number(parts[0]), Number(parts[1])];
    });
    // Prices and the volume stay decimal text: they are shown, summed and subtracted exactly.
    rows.set(tr.dataset.symbol, {
      tr: tr,
      last: tr.dataset.last || null,
      lastTime: Number(tr.dataset.lastTime || 0),
      quoteTime: Number(tr.dataset.quoteTime || 0),
      open: tr.dataset.open || null,
      volume: tr.dataset.volume || null,
      statsTime: Number(tr.dataset.statsTime || 0),
      bid: null, ask: null, move: null, spark: points,
      dirty: false, sparkDirty: false,
    });
  });

  var frame = null;
  function schedule(state) {
    state.dirty = true;
    if (frame === null) frame = requestAnimationFrame(render);
  }

  function cell(tr, column) {
    return tr.querySelector(".col-" + column + " .value");
  }

  function render() {
    frame = null;
    rows.forEach(function (state) {
      if (!state.dirty) return;
      state.dirty = false;
      var tr = state.tr;
      if (state.move !== null) {
        var lastCell = tr.querySelector(".col-last");
        cell(tr, "last").textContent = fmt.price(state.last);
        tr.querySelector(".col-last .tick").className = "tick " + state.move;
        fs.flash(lastCell, state.move);
        tr.dataset.last = state.last;
        state.move = null;
      }
      if (state.last !== null && Number(state.open)) {
        var change = fmt.sub(state.last, state.open);
        var pct = Number(change) / Number(state.open) * 100;
        var changeCell = tr.querySelector(".col-change");
        changeCell.className = "num col-change " + fmt.direction(change);
        changeCell.firstChild.textContent = fmt.arrow(change) + " ";
        cell(tr, "change").textContent = fmt.signedPrice(change);
        var pctCell = tr.querySelector(".col-change_pct");
        pctCell.className = "num col-change_pct " + fmt.direction(pct.toFixed(2));
        pctCell.firstChild.textContent = fmt.arrow(pct.toFixed(2)) + " ";
        cell(tr, "change_pct").textContent = fmt.signed(pct, 2);
        tr.dataset.change = change;
        tr.dataset.changePct = pct;
      }
      if (state.volume !== null) {
        cell(tr, "volume").textContent = fmt.quantity(state.volume);
        tr.dataset.volume = state.volume;
      }
      if (state.bid !== null) cell(tr, "bid").textContent = fmt.price(state.bid);
      if (state.ask !== null) cell(tr, "ask").textContent = fmt.price(state.ask);
      if (state.sparkDirty) {
        state.sparkDirty = false;
        drawSpark(tr.querySelector("svg.spark"), state.spark);
      }
    });
  }

  function drawSpark(svg, points) {
    var closes = points.map(function (p) { return p[1]; });
    if (!closes.length) return;
    var low = Math.min.apply(null, closes);
    var high = Math.max.apply(null, closes);
    var span = high - low || 1;
    var step = (sparkWidth - 2) / Math.max(1, closes.length - 1);
    svg.querySelector("polyline").setAttribute("points", closes.map(function (close, i) {
      return (1 + i * step).toFixed(1) + "," + (1 + (high - close) / span * (sparkHeight - 2)).toFixed(1);
    }).join(" "));
    svg.setAttribute("class", "spark " + fmt.direction(closes[closes.length - 1] - closes[0]));
  }

  function onTrade(trade, info) {
    var state = rows.get(trade.symbol);
    if (!state) return;
    var time = fmt.micros(trade.ts);
    // Trades newer than the 24h statistics add to their volume until the next refresh.
    if (!info.snapshot && state.volume !== null && time / 1e6 > state.statsTime) {
      state.volume = fmt.add(state.volume, trade.size);
      schedule(state);
    }
    if (!(time >= state.lastTime)) return; // a late print (or no time): streamed, but not the last price
    state.lastTime = time;
    state.move = state.last === null ? "flat" : fmt.direction(fmt.sub(trade.price, state.last));
    state.last = trade.price;
    schedule(state);
  }

  function onQuote(quote) {
    var state = rows.get(quote.symbol);
    var time = fmt.micros(quote.ts);
    if (!state || !(time >= state.quoteTime)) return; // an older quote than the one shown
    state.quoteTime = time;
    state.bid = quote.bid;
    state.ask = quote.ask;
    schedule(state);
  }

  function onCandle(candle) {
    var state = rows.get(candle.symbol);
    if (!state || candle.interval !== "1m") return;
    var start = Date.parse(candle.start) / 1000;
    var spark = state.spark;
    var last = spark[spark.length - 1];
    if (last && last[0] === start) last[1] = Number(candle.close);
    else if (!last || last[0] < start) spark.push([start, Number(candle.close)]);
    else return; // an update of an older bucket: the sparkline shows closes only
    while (spark.length && spark[0][0] < start - sparkSeconds) spark.shift();
    state.sparkDirty = true;
    schedule(state);
  }

  var channels = [];
  rows.forEach(function (_state, symbol) {
    channels.push("trades." + symbol, "quotes." + symbol, "candles.1m." + symbol);
  });
  fs.subscribe(channels, function (data, info) {
    if (info.type === "trade") onTrade(data, info);
    else if (info.type === "quote") onQuote(data);
    else if (info.type === "candle") onCandle(data);
  });

  // --- sorting --------------------------------------------------------------------
  var sortValues = {
    symbol: function (tr) { return tr.dataset.symbol; },
    last: function (tr) { return tr.dataset.last === "" ? null : Number(tr.dataset.last); },
    change: function (tr) { return tr.dataset.change === undefined ? null : Number(tr.dataset.change); },
    change_pct: function (tr) { return tr.dataset.changePct === undefined ? null : Number(tr.dataset.changePct); },
    volume: function (tr) { return tr.dataset.volume === "" ? null : Number(tr.dataset.volume); },
  };
  // Server-rendered change values, before the first live update.
  rows.forEach(function (state) {
    if (state.last !== null && Number(state.open)) {
      state.tr.dataset.change = fmt.sub(state.last, state.open);
      state.tr.dataset.changePct = Number(state.tr.dataset.change) / Number(state.open) * 100;
    }
  });

  function sortBy(key, descending) {
    var tbody = table.tBodies[0];
    var value = sortValues[key];
    var sorted = Array.from(tbody.rows).filter(function (tr) { return tr.dataset.symbol; });
    sorted.sort(function (a, b) {
      var x = value(a), y = value(b);
      if (x === null || x === undefined) return 1; // unknown values last, either way
      if (y === null || y === undefined) return -1;
      var order = x < y ? -1 : x > y ? 1 : 0;
      return descending ? -order : order;
    });
    sorted.forEach(function (tr) { tbody.appendChild(tr); });
    table.dataset.sort = key;
    table.dataset.dir = descending ? "desc" : "asc";
    table.querySelectorAll("thead th[aria-sort]").forEach(function (th) {
      var link = th.querySelector("a.sort");
      var active = link.dataset.key === key;
      th.setAttribute("aria-sort", active ? (descending ? "descending" : "ascending") : "none");
      var marker = link.querySelector("span");
      if (marker) marker.remove();
      if (active) {
        marker = document.createElement("span");
        marker.setAttribute("aria-hidden", "true");
        marker.textContent = descending ? " ▼" : " ▲";
        link.appendChild(marker);
      }
      link.setAttribute("href", "?sort=" + link.dataset.key + "&dir=" + (active && !descending ? "desc" : "asc"));
    });
    history.replaceState(null, "", "?sort=" + key + "&dir=" + (descending ? "desc" : "asc"));
  }

  table.querySelectorAll("a.sort").forEach(function (link) {
    link.addEventListener("click", function (event) {
      event.preventDefault();
      var key = link.dataset.key;
      var descending = table.dataset.sort === key ? table.dataset.dir !== "desc" : false;
      sortBy(key, descending);
    });
  });
})();
