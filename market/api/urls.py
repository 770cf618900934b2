from django.urls import path

from market.api import views

urlpatterns = [
    path("symbols", views.SymbolListApi.as_view(), name="symbol-list"),
    path("quotes/<str:symbol>", views.QuoteLatestApi.as_view(), name="quote-latest"),
    path("trades/<str:symbol>", views.TradeListApi.as_view(), name="trade-list"),
    path("candles/<str:symbol>", views.CandleListApi.as_view(), name="candle-list"),
    path("market-summary", views.MarketSummaryApi.as_view(), name="market-summary"),
]
