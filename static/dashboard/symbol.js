/* Symbol page: candlestick chart with volume (lightweight-charts), history
 * from the REST API and the open candle from the stream; interval switcher;
 * live quote, last price and trade tape (a fixed number of rows); the
 * symbol's new alerts at the top of its alert list. */
(function () {
  "use strict";
  var root = document.getElementById("symbol");
  if (!root || !window.FinStream) return;
  var fs = window.FinStream;
  var fmt = fs.fmt;
  var symbol = root.dataset.symbol;
  var open24h = Number(root.dataset.open) ? root.dataset.open : null; // decimal text

  // --- chart ----------------------------------------------------------------------
  var container = document.getElementById("chart");
  var LWC = window.LightweightCharts;
  var interval = container.dataset.interval;
  var candleSeries = null, volumeSeries = null, chart = null;
  var lastBarTime = null;
  var UP = "#3fb950", DOWN = "#ff7b72";

  if (LWC) {
    chart = LWC.createChart(container, {
      autoSize: true,
      layout: { background: { type: "solid", color: "#161b22" }, textColor: "#9da7b3" },
      grid: { vertLines: { color: "#21262d" }, horzLines: { color: "#21262d" } },
      rightPriceScale: { borderColor: "#30363d" },
      timeScale: { borderColor: "#30363d", timeVisible: true, secondsVisible: false, barSpacing: 9, rightOffset: 4 },
      crosshair: { mode: 0 },
    });
    // Rising candles hollow, falling ones filled: direction does not rest on colour alone.
    candleSeries = chart.addSeries(LWC.CandlestickSeries, {
      upColor: "rgba(0, 0, 0, 0)", borderUpColor: UP, wickUpColor: UP,
      downColor: DOWN, borderDownColor: DOWN, wickDownColor: DOWN,
      priceFormat: priceFormat(2),
    });
    candleSeries.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.28 } });
    volumeSeries = chart.addSeries(LWC.HistogramSeries, {
      priceFormat: { type: "volume" }, priceScaleId: "", lastValueVisible: false, priceLineVisible: false,
    });
    volumeSeries.priceScale().applyOptions({ scaleMargins: { top: 0.78, bottom: 0 } });
  }

  // The price axis shows as many places as the symbol's prices have (SHIB at 0.00001227 needs 8).
  var pricePlaces = 2;
  function priceFormat(places) {
    return { type: "price", precision: places, minMove: Number("1e-" + places) };
  }
  function fitPlaces(candles) {
    var places = pricePlaces;
    candles.forEach(function (candle) {
      ["open", "high", "low", "close"].forEach(function (field) { places = Math.max(places, fmt.places(candle[field])); });
    });
    if (places !== pricePlaces && candleSeries) {
      pricePlaces = places;
      candleSeries.applyOptions({ priceFormat: priceFormat(places) });
    }
  }

  function bar(candle) {
    // The API calls the bucket start "time", the stream's message "start".
    var time = Math.floor(Date.parse(candle.time || candle.start) / 1000);
    var o = Number(candle.open), c = Number(candle.close);
    return {
      candle: { time: time, open: o, high: Number(candle.high), low: Number(candle.low), close: c },
      volume: { time: time, value: Number(candle.volume), color: c >= o ? "rgba(63,185,80,0.45)" : "rgba(255,123,114,0.45)" },
    };
  }

  var historyRequest = 0;
  function loadHistory() {
    if (!candleSeries) return Promise.resolve();
    var request = ++historyRequest;
    var wanted = interval;
    return fetch(container.dataset.api + "?interval=" + encodeURIComponent(wanted) + "&limit=500", {
      headers: { Accept: "application/json" },
    })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (body) {
        if (request !== historyRequest) return; // a newer switch won
        fitPlaces(body.candles);
        var bars = body.candles.slice().reverse().map(bar);
        candleSeries.setData(bars.map(function (b) { return b.candle; }));
        volumeSeries.setData(bars.map(function (b) { return b.volume; }));
        lastBarTime = bars.length ? bars[bars.length - 1].candle.time : null;
        // The newest bars at their natural width, whether there are 3 of them or 500.
        chart.timeScale().applyOptions({ barSpacing: 9 });
        chart.timeScale().scrollToRealTime();
        container.dataset.interval = wanted;
        container.dataset.candles = String(bars.length);
        fillCandleTable(wanted, body.candles);
        container.setAttribute("aria-label", symbol + " " + wanted + " candlestick chart with volume, " + bars.length + " candles");
      })
      .catch(function (error) { console.warn("candle history failed", error); });
  }

  // The table under the chart (what a page without JavaScript shows) follows the interval.
  var tableLabel = document.getElementById("candle-table-label");
  var tableRows = document.getElementById("candle-table-rows");
  function fillCandleTable(name, candles) {
    tableLabel.textContent = "Latest " + name + " candles (table)";
    tableRows.textContent = "";
    var newest = candles.slice(0, Number(tableRows.dataset.maxRows || 20));
    if (!newest.length) {
      var empty = document.createElement("tr");
      empty.innerHTML = '<td colspan="7" class="muted"></td>';
      empty.firstChild.textContent = "No " + name + " candles yet: is build_candles running?";
      tableRows.appendChild(empty);
      return;
    }
    newest.forEach(function (candle) {
      var row = document.createElement("tr");
      var cells = [
        new Date(candle.time).toISOString().slice(0, 19).replace("T", " ") + " UTC",
        fmt.price(candle.open), fmt.price(candle.high), fmt.price(candle.low), fmt.price(candle.close),
        fmt.quantity(candle.volume), fmt.grouped(candle.trades),
      ];
      cells.forEach(function (text, i) {
        var cell = document.createElement("td");
        if (i) cell.className = "num";
        cell.textContent = text;
        row.appendChild(cell);
      });
      tableRows.appendChild(row);
    });
  }

  function onCandle(candle, info) {
    if (!candleSeries || candle.interval !== interval) return;
    var b = bar(candle);
    if (lastBarTime !== null && b.candle.time < lastBarTime) return; // the chart only moves forward
    if (info.snapshot && info.resubscribed) {
      loadHistory(); // after a gap or reconnect: candles may have been missed
      return;
    }
    fitPlaces([candle]);
    candleSeries.update(b.candle);
    volumeSeries.update(b.volume);
    if (lastBarTime === null || b.candle.time > lastBarTime) {
      container.dataset.candles = String(Number(container.dataset.candles || 0) + 1);
    }
    lastBarTime = b.candle.time;
  }

  var candleSnapshots = 0;
  function candleHandler(data, info) {
    if (info.snapshot) {
      candleSnapshots += 1;
      info.resubscribed = candleSnapshots > 1;
    }
    onCandle(data, info);
  }

  function channelFor(name) { return "candles." + name + "." + symbol; }

  function switchInterval(name) {
    if (name === interval) return;
    fs.unsubscribe([channelFor(interval)], candleHandler);
    interval = name;
    candleSnapshots = 0;
    lastBarTime = null;
    document.querySelectorAll(".intervals a").forEach(function (link) {
      if (link.dataset.interval === name) link.setAttribute("aria-current", "true");
      else link.removeAttribute("aria-current");
    });
    history.replaceState(null, "", "?interval=" + encodeURIComponent(name));
    loadHistory().then(function () { fs.subscribe([channelFor(name)], candleHandler); });
  }

  document.querySelectorAll(".intervals a").forEach(function (link) {
    link.addEventListener("click", function (event) {
      if (!candleSeries) return; // no chart library: let the link reload the page
      event.preventDefault();
      switchInterval(link.dataset.interval);
    });
  });

  // --- last price and quote ---------------------------------------------------------
  var lastEl = document.getElementById("last");
  var lastPrice = lastEl.dataset.last || null; // decimal text
  var lastTime = Number(lastEl.dataset.lastTime || 0);
  var changeEl = document.getElementById("change");

  function onPrice(trade) {
    var time = fmt.micros(trade.ts || trade.time);
    if (!(time >= lastTime)) return; // a late print (or no time): on the tape, but not the last price
    lastTime = time;
    var move = lastPrice === null ? "flat" : fmt.direction(fmt.sub(trade.price, lastPrice));
    lastPrice = trade.price;
    lastEl.querySelector(".value").textContent = fmt.price(trade.price);
    lastEl.querySelector(".tick").className = "tick " + move;
    fs.flash(lastEl, move);
    if (open24h) {
      var change = fmt.sub(trade.price, open24h);
      changeEl.className = "num " + fmt.direction(change);
      changeEl.firstChild.textContent = fmt.arrow(change) + " ";
      changeEl.querySelector(".value").textContent = fmt.signedPrice(change);
      changeEl.querySelector(".pct").textContent = fmt.signed(Number(change) / Number(open24h) * 100, 2);
    }
  }

  var quoteEl = document.getElementById("quote");
  var quoteTime = Number(quoteEl.dataset.quoteTime || 0);
  function onQuote(quote) {
    var time = fmt.micros(quote.ts);
    if (!(time >= quoteTime)) return; // an older quote than the one shown
    quoteTime = time;
    var set = function (field, text) { quoteEl.querySelector('[data-field="' + field + '"]').textContent = text; };
    set("bid", fmt.price(quote.bid));
    set("ask", fmt.price(quote.ask));
    set("bid_size", fmt.quantity(quote.bid_size));
    set("ask_size", fmt.quantity(quote.ask_size));
    set("spread", fmt.price(fmt.sub(quote.ask, quote.bid)));
    set("time", fmt.clock(quote.ts));
  }

  // --- trade tape -------------------------------------------------------------------
  var tape = document.getElementById("tape");
  var tapeMax = Number(tape.dataset.maxRows);
  var reloading = null; // trades that arrived while the tape was being reloaded

  function tapeRow(trade) {
    var tr = document.createElement("tr");
    tr.dataset.id = trade.id;
    tr.dataset.time = fmt.micros(trade.ts || trade.time);
    tr.className = trade.side;
    var cells = [
      [fmt.clock(trade.ts || trade.time), "num"], [fmt.price(trade.price), "num"],
      [fmt.quantity(trade.size), "num"], [trade.side === "buy" ? "▲ buy" : "▼ sell", ""],
    ];
    cells.forEach(function (c) {
      var td = document.createElement("td");
      td.textContent = c[0];
      if (c[1]) td.className = c[1];
      tr.appendChild(td);
    });
    return tr;
  }

  function addTrade(trade) {
    if (reloading) { reloading.push(trade); return; }
    var row = tapeRow(trade);
    // A trade is its id and time (docs/messages.md): the same id at another time is another trade.
    if (tape.querySelector('tr[data-id="' + CSS.escape(trade.id) + '"][data-time="' + row.dataset.time + '"]')) return;
    var placeholder = tape.querySelector("tr.placeholder");
    if (placeholder) placeholder.remove();
    // Newest first, as the API orders them: a late print goes where its time puts it, not on top.
    var time = Number(row.dataset.time);
    var after = Array.prototype.find.call(tape.rows, function (other) { return !(Number(other.dataset.time) > time); });
    tape.insertBefore(row, after || null);
    fs.flash(row, trade.side === "buy" ? "up" : "down");
    fs.trimRows(tape, tapeMax);
  }

  /* On each (re)subscription the tape is reloaded from the API: trades that
     went by while the stream was away are not lost from view. */
  function reloadTape() {
    reloading = reloading || [];
    fetch("/api/v1/trades/" + encodeURIComponent(symbol) + "?limit=" + tapeMax, { headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (body) {
        tape.textContent = "";
        body.trades.forEach(function (trade) { tape.appendChild(tapeRow(trade)); });
      })
      .catch(function (error) { console.warn("trade tape reload failed", error); })
      .then(function () {
        var pending = reloading;
        reloading = null;
        pending.forEach(addTrade);
      });
  }

  function onTrade(trade, info) {
    onPrice(trade);
    if (info.snapshot) reloadTape();
    else addTrade(trade);
  }

  // --- the symbol's alerts ------------------------------------------------------------
  var alertRows = document.getElementById("alert-rows");
  function onAlert(alert, info) {
    if (info.snapshot || alert.symbol !== symbol) return;
    fs.prependAlertRow(alertRows, alert.id, { compact: "1" });
  }

  // Alerts raised while the connection was down arrive with no event: fetch the newest and add
  // those missing, oldest first so that the newest ends on top.
  function reloadAlerts() {
    var limit = Number(alertRows.dataset.maxRows || 10);
    fetch("/api/v1/alerts?symbol=" + encodeURIComponent(symbol) + "&limit=" + limit,
          { headers: { Accept: "application/json" } })
      .then(function (response) { if (!response.ok) throw new Error("HTTP " + response.status); return response.json(); })
      .then(function (body) {
        return body.alerts.slice().reverse().reduce(function (chain, alert) {
          return chain.then(function () { return fs.prependAlertRow(alertRows, alert.id, { compact: "1" }); });
        }, Promise.resolve());
      })
      .then(function () {
        // A live alert may have landed while these were fetched: newest event time first again.
        Array.from(alertRows.querySelectorAll("tr[data-time]"))
          .sort(function (a, b) { return Number(b.dataset.time) - Number(a.dataset.time); })
          .forEach(function (row) { alertRows.appendChild(row); });
      })
      .catch(function (error) { console.warn("alert list reload failed", error); });
  }
  fs.onReconnect(reloadAlerts);

  fs.subscribe(["trades." + symbol], onTrade);
  fs.subscribe(["quotes." + symbol], onQuote);
  fs.subscribe(["alerts"], onAlert);
  loadHistory().then(function () { fs.subscribe([channelFor(interval)], candleHandler); });
})();
