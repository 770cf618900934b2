"""The market-data REST endpoints of the spec (/api/v1/...). Thin: parse,
call a selector, render. docs/api.md describes them for users."""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from finstream.errors import ApiError
from market import selectors
from market.api.pagination import Position, next_link
from market.api.serializers import (
    CandlePageSerializer,
    CandleQuerySerializer,
    ErrorSerializer,
    MarketSummarySerializer,
    QuoteSerializer,
    SymbolListSerializer,
    TradePageSerializer,
    TradeQuerySerializer,
    candles_json,
    quote_json,
    summary_json,
    trades_json,
)
from streaming.schemas import is_valid_symbol, symbol_upper

SYMBOL_PARAMETER = OpenApiParameter(
    "symbol", str, OpenApiParameter.PATH, description="Ticker, e.g. AAPL (case-insensitive)."
)
BAD_REQUEST = OpenApiResponse(ErrorSerializer, description="A parameter is invalid; the message lists what is allowed.")
UNKNOWN_SYMBOL = OpenApiResponse(ErrorSerializer, description="unknown_symbol: GET /api/v1/symbols lists them.")


def known_symbol(symbol: str) -> str:
    """The ticker for a path segment, or a 404 unknown_symbol."""
    ticker = symbol_upper(symbol)
    if not is_valid_symbol(ticker) or (
            ticker not in selectors.symbol_tickers_recent(max_age=settings.API_SYMBOLS_CACHE_SECONDS)
            and not selectors.symbol_exists(ticker=ticker)):  # a symbol added since
        raise ApiError(
            code="unknown_symbol",
            message=f"unknown symbol {symbol[:40]!r}: GET /api/v1/symbols lists the symbols",
            status_code=status.HTTP_404_NOT_FOUND,
        )
    return ticker


def query(serializer_class, request, **context) -> dict:
    params = serializer_class(data=request.query_params, context=context)
    params.is_valid(raise_exception=True)
    return params.validated_data


class ReadApi(APIView):
    """An open read endpoint: any other method is 405, whoever asks (under the default permission,
    an anonymous DELETE was refused as unauthenticated before its method was looked at)."""

    permission_classes = [AllowAny]


class SymbolListApi(ReadApi):
    @extend_schema(operation_id="symbols_list", summary="Every active symbol", responses=SymbolListSerializer)
    def get(self, request):
        return Response(SymbolListSerializer({"symbols": selectors.symbol_list()}).data)


class QuoteLatestApi(ReadApi):
    @extend_schema(
        operation_id="quotes_latest", summary="The latest bid/ask quote of a symbol (from Redis)",
        parameters=[SYMBOL_PARAMETER],
        responses={200: QuoteSerializer, 404: OpenApiResponse(
            ErrorSerializer, description="unknown_symbol, or no_quote when none has arrived yet.")},
    )
    def get(self, request, symbol: str):
        ticker = known_symbol(symbol)
        quote = selectors.quote_latest(symbol=ticker)
        if quote is None:
            raise ApiError(code="no_quote", message=f"no quote for {ticker} yet: none has come (a replayed file "
                                                    "of trades only has none), or ingest_quotes is not running",
                           status_code=status.HTTP_404_NOT_FOUND)
        return Response(quote_json(ticker, quote))  # as QuoteSerializer documents it


class TradeListApi(ReadApi):
    @extend_schema(
        operation_id="trades_list", summary="Trades of a symbol, newest first, a page at a time",
        parameters=[SYMBOL_PARAMETER, TradeQuerySerializer],
        responses={200: TradePageSerializer, 400: BAD_REQUEST, 404: UNKNOWN_SYMBOL},
    )
    def get(self, request, symbol: str):
        ticker = known_symbol(symbol)
        params = query(TradeQuerySerializer, request, symbol=ticker)
        after = params.get("cursor")
        if after is not None and after.seq is None:
            raise ApiError(code="invalid_cursor", message="this cursor is not one this API issued: follow the "
                                                          "`next` link of a trades page as it is")
        limit = params["limit"]
        rows = selectors.trade_page(
            symbol=ticker, start=params.get("start"), end=params.get("end"),
            after=None if after is None else (after.time, after.seq, after.id), descending=params["sort"] == "desc",
            limit=limit + 1,
        )
        # Rendered as TradePageSerializer documents it (test_api_market checks they agree).
        return Response({
            "symbol": ticker, "trades": trades_json(rows[:limit]),
            "next": next_link(request, rows, limit=limit, sort=params["sort"], listing=params["listing"],
                              position_of=lambda row: Position(row.time, row.trade_id, row.seq)),
        })


class CandleListApi(ReadApi):
    @extend_schema(
        operation_id="candles_list", summary="OHLCV candles of a symbol, newest first, a page at a time",
        parameters=[SYMBOL_PARAMETER, CandleQuerySerializer],
        responses={200: CandlePageSerializer, 400: BAD_REQUEST, 404: UNKNOWN_SYMBOL},
    )
    def get(self, request, symbol: str):
        ticker = known_symbol(symbol)
        params = query(CandleQuerySerializer, request, symbol=ticker)
        after = params.get("cursor")
        limit = params["limit"]
        rows = selectors.candle_page(
            symbol=ticker, interval=params["interval"], start=params.get("start"), end=params.get("end"),
            after=None if after is None else after.time, descending=params["sort"] == "desc", limit=limit + 1,
        )
        return Response({
            "symbol": ticker, "interval": params["interval"], "candles": candles_json(rows[:limit]),
            "next": next_link(request, rows, limit=limit, sort=params["sort"], listing=params["listing"],
                              position_of=lambda candle: Position(candle.start)),
        })


class MarketSummaryApi(ReadApi):
    @extend_schema(operation_id="market_summary", summary="Every symbol: last price, 24h change and range, bid/ask",
                   responses=MarketSummarySerializer)
    def get(self, request):
        rows = selectors.market_summary(symbols=selectors.symbol_tickers_recent(
            max_age=settings.API_SYMBOLS_CACHE_SECONDS))
        return Response({"symbols": summary_json(rows)})  # as MarketSummarySerializer documents it
