"""The dashboard: server-rendered pages that go live in the browser.

Each page is complete without JavaScript (the first paint is the server's);
static/dashboard/*.js then subscribes to /ws/stream and updates it in place.
HTMX does the partial swaps: alert filters, a new alert's row, acknowledge
and resolve, the pipeline page's refresh. A view that answers an HTMX request
(`HX-Request` header) renders only the fragment that request replaces.

Thin like the API views: parse, call selectors and services, render.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from redis.exceptions import RedisError

from alerts import selectors as alert_selectors
from alerts import services as alert_services
from alerts.models import Alert, AlertRule
from market import selectors
from market.domain.candles import INTERVALS
from market.pipeline_status import pipeline_status
from streaming.schemas import symbol_upper

log = logging.getLogger(__name__)

SPARKLINE_MINUTES = 60
SPARKLINE_WIDTH, SPARKLINE_HEIGHT = 120, 28
TAPE_ROWS = 20  # the trade tape keeps this many rows, live or not
ALERT_ROWS = 50  # the alert list too
SYMBOL_ALERT_ROWS = 10
CANDLE_TABLE_ROWS = 20
OVERVIEW_SORTS = {
    "symbol": lambda row: row.symbol,
    "last": lambda row: row.last,
    "change": lambda row: row.change_24h,
    "change_pct": lambda row: row.change_pct_24h,
    "volume": lambda row: row.volume_24h,
}


def _is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def sparkline_points(closes: list[Decimal], *, width: int = SPARKLINE_WIDTH, height: int = SPARKLINE_HEIGHT) -> str:
    """SVG polyline points of `closes`, scaled into width x height (1 px margin)."""
    if not closes:
        return ""
    low, high = min(closes), max(closes)
    span = (high - low) or Decimal(1)
    step = (width - 2) / max(1, len(closes) - 1)
    return " ".join(
        f"{1 + index * step:.1f},{1 + float((high - close) / span) * (height - 2):.1f}"
        for index, close in enumerate(closes)
    )


# --- market overview -------------------------------------------------------------------
@require_GET
def overview(request):
    """Every symbol: last, 24h change, a sparkline of the last hour, volume, bid/ask."""
    tickers = selectors.symbol_tickers()
    redis_error = None
    try:
        rows = selectors.market_summary(symbols=tickers)
    except RedisError as error:
        rows = [selectors.SummaryRow(symbol=ticker) for ticker in tickers]
        log.warning("overview: Redis did not answer: %s", error)
        redis_error = "Redis did not answer: live prices are missing. Is it running? `make status`"
    since = datetime.now(UTC) - timedelta(minutes=SPARKLINE_MINUTES)
    # One primary-key range scan per symbol: (symbol, interval, time) leads with the symbol.
    closes = {
        ticker: [(int(candle.start.timestamp()), candle.close) for candle in selectors.candle_page(
            symbol=ticker, interval="1m", start=since, descending=False, limit=SPARKLINE_MINUTES + 1)]
        for ticker in tickers
    }
    sort = request.GET.get("sort", "symbol")
    sort = sort if sort in OVERVIEW_SORTS else "symbol"
    descending = request.GET.get("dir") == "desc"
    key = OVERVIEW_SORTS[sort]
    # Rows without the value (no trade yet) go last whichever the direction.
    known = sorted((row for row in rows if key(row) is not None), key=key, reverse=descending)
    rows = known + [row for row in rows if key(row) is None]
    return render(request, "dashboard/overview.html", {
        "nav": "overview",
        "rows": [{
            "summary": row,
            "spark": closes.get(row.symbol, []),
            "spark_points": sparkline_points([close for _start, close in closes.get(row.symbol, [])]),
            "spark_change": closes[row.symbol][-1][1] - closes[row.symbol][0][1] if closes.get(row.symbol) else None,
        } for row in rows],
        "sort": sort, "descending": descending,
        "columns": [("symbol", "Symbol"), ("last", "Last"), ("change", "24h chg"), ("change_pct", "24h %"),
                    ("volume", "24h volume")],
        "spark_size": (SPARKLINE_WIDTH, SPARKLINE_HEIGHT), "spark_minutes": SPARKLINE_MINUTES,
        "redis_error": redis_error,
    })


# --- symbol detail ---------------------------------------------------------------------
@require_GET
def symbol_detail(request, symbol: str):
    """Chart (drawn by JS from the API), latest quote, trade tape, recent candles and alerts."""
    ticker = symbol_upper(symbol)
    if len(ticker) > 16 or not selectors.symbol_exists(ticker=ticker):
        raise Http404(f"unknown symbol {symbol[:40]!r}")
    interval = request.GET.get("interval", "1m")
    interval = interval if interval in INTERVALS else "1m"
    redis_error = None
    try:
        summary = selectors.market_summary(symbols=[ticker])[0]
        quote = selectors.quote_latest(symbol=ticker)
    except RedisError as error:
        summary, quote = selectors.SummaryRow(symbol=ticker), None
        log.warning("symbol page: Redis did not answer: %s", error)
        redis_error = "Redis did not answer: the latest quote is missing. Is it running? `make status`"
    return render(request, "dashboard/symbol.html", {
        "nav": "overview",
        "symbol": ticker,
        "summary": summary,
        "quote": quote,
        "spread": None if quote is None else quote.ask - quote.bid,
        "interval": interval,
        "intervals": list(INTERVALS),
        "candles": selectors.candle_page(symbol=ticker, interval=interval, limit=CANDLE_TABLE_ROWS),
        "candle_rows": CANDLE_TABLE_ROWS,
        "trades": selectors.trade_page(symbol=ticker, limit=TAPE_ROWS),
        "tape_rows": TAPE_ROWS,
        "alerts": alert_selectors.alert_page(symbol=ticker, limit=SYMBOL_ALERT_ROWS),
        "alert_rows": SYMBOL_ALERT_ROWS,
        "redis_error": redis_error,
    })


# --- alerts ------------------------------------------------------------------------------
def _alert_filters(request) -> tuple[dict[str, str], list[str]]:
    """The query string's filters, and what is wrong with those whose value is not one there is (a
    link written by hand): the page then lists no alert rather than every one."""
    allowed = {
        "symbol": set(selectors.symbol_tickers()),
        "severity": set(Alert.Severity.values),
        "type": set(AlertRule.Type.values),
        "state": set(alert_selectors.ALERT_STATES),
    }
    filters, unknown = {}, []
    for name, values in allowed.items():
        value = request.GET.get(name, "")
        value = symbol_upper(value) if name == "symbol" else value
        if value in values:
            filters[name] = value
        elif value:
            unknown.append(f"{value[:40]!r} is not a {name}")
    return filters, unknown


@require_GET
def alert_list(request):
    """Alerts, newest first, filtered by symbol, severity, type and state."""
    filters, unknown = _alert_filters(request)
    context = {
        "nav": "alerts",
        "alerts": [] if unknown else alert_selectors.alert_page(**filters, limit=ALERT_ROWS),
        "unknown_filters": unknown,
        "filters": filters,
        "max_rows": ALERT_ROWS,
        "symbols": selectors.symbol_tickers(),
        "severities": Alert.Severity.choices,
        "types": AlertRule.Type.choices,
        "states": alert_selectors.ALERT_STATES,
        "next": request.get_full_path(),
    }
    if _is_htmx(request) and request.headers.get("HX-Target") == "alert-list":
        return render(request, "dashboard/_alert_table.html", context)
    return render(request, "dashboard/alerts.html", context)


def _alert_or_404(alert_id: str) -> Alert:
    alert = alert_selectors.alert_get(alert_id=alert_id)
    if alert is None:
        raise Http404(f"no alert {alert_id[:70]!r}")
    return alert


@require_GET
def alert_row(request, alert_id: str):
    """One alert's table row: what the page fetches when the stream announces a new alert (none of a
    hidden symbol, which the lists leave out)."""
    alert = _alert_or_404(alert_id)
    if alert.symbol in selectors.symbol_tickers_hidden():
        raise Http404(f"{alert.symbol} is hidden")
    return render(request, "dashboard/_alert_row.html", {
        "alert": alert, "next": request.GET.get("next", reverse("dashboard-alerts")),
        "fresh": request.GET.get("fresh") == "1", "compact": request.GET.get("compact") == "1",
    })


def _alert_action(request, alert_id: str, action):
    if not request.user.is_authenticated:
        if _is_htmx(request):
            response = HttpResponse(status=401)
            response["HX-Redirect"] = f"{reverse('dashboard-login')}?next={reverse('dashboard-alerts')}"
            return response
        return redirect_to_login(reverse("dashboard-alerts"), login_url=reverse("dashboard-login"))
    alert = action(alert=_alert_or_404(alert_id), user=request.user)
    back = request.POST.get("next") or reverse("dashboard-alerts")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("dashboard-alerts")
    if _is_htmx(request):
        return render(request, "dashboard/_alert_row.html", {"alert": alert, "next": back})
    return redirect(back)  # without JavaScript: post, redirect, get


@require_POST
def alert_acknowledge(request, alert_id: str):
    return _alert_action(request, alert_id, alert_services.alert_acknowledge)


@require_POST
def alert_resolve(request, alert_id: str):
    return _alert_action(request, alert_id, alert_services.alert_resolve)


# --- pipeline ------------------------------------------------------------------------------
@require_GET
def pipeline(request):
    """Offsets, lag and rates per topic and group, dead letters, processes, /ready, storage."""
    context = {"nav": "pipeline", "status": pipeline_status()}
    if _is_htmx(request):
        return render(request, "dashboard/_pipeline_body.html", context)
    return render(request, "dashboard/pipeline.html", context)
