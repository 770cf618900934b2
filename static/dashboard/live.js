/* FinStream live client: one WebSocket to /ws/stream per page (docs/api.md).
 *
 * Pages call FinStream.subscribe(channels, handler). The client connects on
 * the first subscription, re-subscribes everything after a reconnect (which
 * brings a fresh snapshot per channel), and watches the per-channel sequence
 * numbers: a jump, or a heartbeat that names a newer seq than we saw, means
 * events were lost, so it re-subscribes that channel for a fresh snapshot.
 * Reconnects back off from 0.5 s to 10 s; the status pill in the top bar says
 * "live", "connecting" or "reconnecting" meanwhile, "no data for N s"
 * when the trades and quotes it follows have stopped coming (QUIET_MS), and
 * "no candles for N s" when trades keep coming but the candles it follows
 * for their symbol have not moved since.
 *
 * handler(data, info): data is the Kafka message; info is {channel, type, snapshot}.
 */
(function () {
  "use strict";

  var MIN_BACKOFF_MS = 500;
  var MAX_BACKOFF_MS = 10000;
  // Heartbeats come every WS_HEARTBEAT_SECONDS (15 s by default): 40 s of
  // silence means a connection that died without a close.
  var SILENCE_MS = 40000;
  // A page that follows trades or quotes and gets none for this long, on a
  // connection that is fine, says so: the feed or a consumer has stopped
  // upstream, and the prices shown are not moving for that reason.
  var QUIET_MS = 10000;

  var listeners = new Map(); // channel -> Set of handlers
  var lastSeq = new Map(); // channel -> seq of the newest event or snapshot seen
  var socket = null;
  var backoff = MIN_BACKOFF_MS;
  var attempts = 0;
  var watchdog = null;
  var reconnectTimer = null;
  var reconnectHooks = []; // called after a reconnection: what was missed meanwhile is the page's to fetch
  var lastMarketEvent = 0; // Date.now() of the newest trade or quote, or of the connection
  // symbol -> {since: Date.now() of its receipt, micros: its event time} of the oldest trade received
  // that the symbol's candles do not hold yet (a candle holds the trades up to its last_trade_ts). A
  // batch's candles follow its trades within a second, so a trade left uncovered for QUIET_MS means
  // build_candles has stopped or fallen behind while the relay still runs: the chart is stale.
  var tradesAheadOfCandles = new Map();
  var candlesThrough = new Map(); // symbol -> event time (epoch µs) of the latest trade its candles hold
  var quietCheck = null;

  function setStatus(state, text) {
    var pill = document.getElementById("live-status");
    if (!pill) return;
    pill.dataset.state = state;
    pill.textContent = text || state;
  }

  function url() {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + (document.body.dataset.wsPath || "/ws/stream");
  }

  function send(action, channels) {
    if (!channels.length || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ action: action, channels: channels }));
  }

  function connect() {
    reconnectTimer = null;
    var again = attempts > 0;
    setStatus(again ? "reconnecting" : "connecting", again ? "reconnecting…" : "connecting…");
    var ws = new WebSocket(url());
    socket = ws;
    ws.onopen = function () {
      backoff = MIN_BACKOFF_MS;
      attempts = 0;
      lastSeq.clear();
      tradesAheadOfCandles.clear();
      candlesThrough.clear();
      setStatus("live", "live");
      send("subscribe", Array.from(listeners.keys()));
      touch();
      lastMarketEvent = Date.now();
      clearInterval(quietCheck);
      quietCheck = setInterval(checkQuiet, 1000);
      if (again) reconnectHooks.forEach(function (hook) { hook(); });
    };
    ws.onmessage = function (event) {
      touch();
      handle(JSON.parse(event.data));
    };
    ws.onclose = function () { disconnected(ws); };
    ws.onerror = function () { /* onclose follows */ };
  }

  function disconnected(ws) {
    if (socket !== ws) return;
    socket = null;
    clearTimeout(watchdog);
    clearInterval(quietCheck);
    attempts += 1;
    setStatus("reconnecting", "reconnecting…");
    if (reconnectTimer === null) {
      reconnectTimer = setTimeout(connect, backoff + Math.random() * 250);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  }

  function touch() {
    clearTimeout(watchdog);
    watchdog = setTimeout(function () {
      var ws = socket;
      if (!ws) return;
      ws.onclose = ws.onmessage = null;
      try { ws.close(); } catch (e) { /* already closing */ }
      disconnected(ws);
    }, SILENCE_MS);
  }

  function followsMarket() {
    return Array.from(listeners.keys()).some(function (channel) {
      return channel.indexOf("trades.") === 0 || channel.indexOf("quotes.") === 0;
    });
  }

  function followsCandlesOf(symbol) {
    return Array.from(listeners.keys()).some(function (channel) {
      return channel.indexOf("candles.") === 0 && channel.slice(channel.indexOf(".", 8) + 1) === symbol;
    });
  }

  function oldestTradeWithoutCandles() {
    var oldest = Infinity;
    tradesAheadOfCandles.forEach(function (waiting, symbol) {
      if (waiting.since < oldest && followsCandlesOf(symbol)) oldest = waiting.since;
    });
    return oldest;
  }

  function checkQuiet() {
    var now = Date.now();
    var silent = now - lastMarketEvent;
    var candlesBehind = now - oldestTradeWithoutCandles();
    if (followsMarket() && silent >= QUIET_MS) setStatus("quiet", "no data for " + Math.round(silent / 1000) + " s");
    else if (candlesBehind >= QUIET_MS) setStatus("quiet", "no candles for " + Math.round(candlesBehind / 1000) + " s");
    else {
      var pill = document.getElementById("live-status");
      if (pill && pill.dataset.state === "quiet") setStatus("live", "live");
    }
  }

  function recheckIfQuiet() {
    var pill = document.getElementById("live-status");
    if (pill && pill.dataset.state === "quiet") checkQuiet();
  }

  function marketEvent(type, data) {
    lastMarketEvent = Date.now();
    var symbol = data.symbol;
    if (type === "trade" && !tradesAheadOfCandles.has(symbol)) {
      var micros = fmt.micros(data.ts);
      // A trade whose candle came first (the relay behind on trades) is not waiting for one.
      if (!(micros <= candlesThrough.get(symbol))) {
        tradesAheadOfCandles.set(symbol, { since: lastMarketEvent, micros: micros });
      }
    }
    recheckIfQuiet();
  }

  function candleEvent(candle) {
    var through = fmt.micros(candle.last_trade_ts);
    if (!(through <= candlesThrough.get(candle.symbol))) candlesThrough.set(candle.symbol, through);
    var waiting = tradesAheadOfCandles.get(candle.symbol);
    // Only candles that hold the waiting trade end the wait: a build_candles running behind
    // publishes candles every batch, of trades seconds old.
    if (waiting && !(waiting.micros > candlesThrough.get(candle.symbol))) {
      tradesAheadOfCandles.delete(candle.symbol);
      recheckIfQuiet();
    }
  }

  function resync(channel) {
    lastSeq.delete(channel);
    send("unsubscribe", [channel]);
    send("subscribe", [channel]);
  }

  function dispatch(channel, type, data, snapshot) {
    var handlers = listeners.get(channel);
    if (!handlers) return;
    handlers.forEach(function (handler) {
      try {
        handler(data, { channel: channel, type: type, snapshot: snapshot });
      } catch (error) {
        console.error("FinStream handler for " + channel + " failed", error);
      }
    });
  }

  function handle(message) {
    switch (message.type) {
      case "snapshot":
        lastSeq.set(message.channel, message.seq);
        if (message.data && message.event === "candle") candleEvent(message.data);
        if (message.data) dispatch(message.channel, message.event, message.data, true);
        return;
      case "trade":
      case "quote":
      case "candle":
      case "alert": {
        var last = lastSeq.get(message.channel);
        if (last === undefined) return; // unsubscribed, or waiting for a re-subscription's snapshot
        if (message.seq <= last) return; // already covered
        lastSeq.set(message.channel, message.seq);
        if (message.type === "trade" || message.type === "quote") marketEvent(message.type, message.data);
        if (message.type === "candle") candleEvent(message.data);
        if (message.seq > last + 1) {
          resync(message.channel); // events were lost: take a fresh snapshot
          return;
        }
        dispatch(message.channel, message.type, message.data, false);
        return;
      }
      case "heartbeat":
        Object.keys(message.seqs || {}).forEach(function (channel) {
          var seen = lastSeq.get(channel);
          if (seen !== undefined && message.seqs[channel] > seen) resync(channel);
        });
        return;
      case "error":
        console.warn("FinStream stream error:", message.code, message.message);
        return;
      default:
        return; // subscribed / unsubscribed acknowledgements
    }
  }

  function subscribe(channels, handler) {
    var added = [];
    channels.forEach(function (channel) {
      if (!listeners.has(channel)) {
        listeners.set(channel, new Set());
        added.push(channel);
      }
      listeners.get(channel).add(handler);
    });
    if (!socket && reconnectTimer === null) connect();
    else send("subscribe", added);
  }

  function unsubscribe(channels, handler) {
    var removed = [];
    channels.forEach(function (channel) {
      var handlers = listeners.get(channel);
      if (!handlers) return;
      handlers.delete(handler);
      if (!handlers.size) {
        listeners.delete(channel);
        lastSeq.delete(channel);
        removed.push(channel);
      }
    });
    send("unsubscribe", removed);
  }

  // --- formatting, as the server's templatetags/dashboard.py does ------------------
  // Prices and sizes exactly (decimal.js); floats only for percentages and counts.
  var Decimal = window.FinStreamDecimal;
  function num(value) {
    if (value === null || value === undefined || value === "") return null;
    var n = Number(value);
    return isFinite(n) ? n : null;
  }
  var fmt = {
    price: Decimal.price,
    signedPrice: Decimal.signedPrice,
    quantity: Decimal.quantity,
    add: Decimal.add,
    sub: Decimal.sub,
    places: Decimal.places,
    grouped: function (value, places) {
      var n = num(value);
      if (n === null) return "—";
      places = places || 0;
      return n.toLocaleString("en-US", { minimumFractionDigits: places, maximumFractionDigits: places });
    },
    signed: function (value, places) {
      var n = num(value);
      if (n === null) return "—";
      var text = n.toFixed(places === undefined ? 2 : places);
      return n > 0 && Number(text) !== 0 ? "+" + text : text;
    },
    direction: function (value) {
      var n = num(value);
      return n === null || n === 0 ? "flat" : n > 0 ? "up" : "down";
    },
    arrow: function (value) {
      return { up: "▲", down: "▼" }[fmt.direction(value)] || "";
    },
    /* An event's RFC 3339 time as epoch microseconds (NaN if it has none): late events are told
       apart from newer ones to the microsecond, as the server orders them. */
    micros: function (iso) {
      var fraction = /\.(\d+)/.exec(iso || "");
      return Date.parse(iso) * 1000 + (fraction ? Number((fraction[1] + "000000").slice(3, 6)) : 0);
    },
    /* UTC time of day, with the date when it is not today's (as the server's `clock` filter). */
    clock: function (iso) {
      if (!iso) return "—";
      var text = new Date(iso).toISOString();
      var today = text.slice(0, 10) === new Date().toISOString().slice(0, 10);
      return today ? text.slice(11, 19) : text.slice(0, 10) + " " + text.slice(11, 19);
    },
  };

  /* Restart the flash animation of `element` in the direction of the move. */
  function flash(element, dir) {
    element.classList.remove("flash-up", "flash-down");
    if (dir !== "up" && dir !== "down") return;
    void element.offsetWidth; // restart the animation
    element.classList.add("flash-" + dir);
  }

  /* Keep at most `max` rows in `tbody`: the DOM never grows with time. */
  function trimRows(tbody, max) {
    while (tbody.rows.length > max) tbody.deleteRow(tbody.rows.length - 1);
  }

  /* Fetch an alert's server-rendered row and put it at the top of `tbody`
     (once: a row already there is left alone). */
  function prependAlertRow(tbody, alertId, params) {
    if (document.getElementById("alert-" + alertId)) return Promise.resolve();
    var query = new URLSearchParams(Object.assign({ fresh: "1" }, params || {}));
    if (tbody.dataset.next) query.set("next", tbody.dataset.next);
    var href = tbody.dataset.rowUrl.replace("ALERT_ID", encodeURIComponent(alertId)) + "?" + query;
    return fetch(href, { headers: { "HX-Request": "true" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html || document.getElementById("alert-" + alertId)) return;
        var holder = document.createElement("tbody");
        holder.innerHTML = html.trim();
        var row = holder.querySelector("tr");
        if (!row) return;
        var placeholder = tbody.querySelector("tr.placeholder");
        if (placeholder) placeholder.remove();
        tbody.insertBefore(row, tbody.firstElementChild);
        if (window.htmx) window.htmx.process(row); // its acknowledge/resolve forms
        trimRows(tbody, Number(tbody.dataset.maxRows || 50));
      });
  }

  /* An HTMX action the server refused or could not be sent (the pipeline
     page's polling reports through the status pill instead). */
  function requestFailed(event) {
    if (event.target.closest && event.target.closest("#pipeline-live")) return;
    var banner = document.getElementById("request-error");
    if (!banner) return;
    var xhr = event.detail.xhr;
    banner.textContent = xhr && xhr.status
      ? "The server refused that (" + xhr.status + " " + xhr.statusText + "): reload the page and try again."
      : "The server did not answer: check the connection and try again.";
    banner.hidden = false;
  }
  document.addEventListener("htmx:responseError", requestFailed);
  document.addEventListener("htmx:sendError", requestFailed);
  document.addEventListener("htmx:afterRequest", function (event) {
    var banner = document.getElementById("request-error");
    if (banner && event.detail.successful && !(event.target.closest && event.target.closest("#pipeline-live"))) {
      banner.hidden = true;
    }
  });

  window.FinStream = {
    subscribe: subscribe,
    unsubscribe: unsubscribe,
    onReconnect: function (hook) { reconnectHooks.push(hook); },
    setStatus: setStatus,
    fmt: fmt,
    flash: flash,
    trimRows: trimRows,
    prependAlertRow: prependAlertRow,
  };
})();
