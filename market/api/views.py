"""The market-data REST endpoints of the spec (/api/v1/...). Thin: parse,
call a selector, render."""

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from finstream.errors import ApiError
from market import selectors
from market.api.serializers import LimitSerializer, SymbolSerializer, TradeSerializer


def _known_symbol(symbol: str) -> str:
    ticker = symbol.upper()
    if not selectors.symbol_exists(ticker=ticker):
        raise ApiError(
            code="unknown_symbol",
            message=f"unknown symbol {symbol!r}: GET /api/v1/symbols lists the symbols",
            status_code=status.HTTP_404_NOT_FOUND,
        )
    return ticker


class SymbolListApi(APIView):
    def get(self, request):
        return Response({"symbols": SymbolSerializer(selectors.symbol_list(), many=True).data})


class TradeListApi(APIView):
    def get(self, request, symbol: str):
        ticker = _known_symbol(symbol)
        params = LimitSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        trades = selectors.trade_list(symbol=ticker, limit=params.validated_data["limit"])
        return Response({"symbol": ticker, "trades": TradeSerializer(trades, many=True).data})
