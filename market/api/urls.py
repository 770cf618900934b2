from django.urls import path

from market.api import views

urlpatterns = [
    path("symbols", views.SymbolListApi.as_view(), name="symbol-list"),
    path("trades/<str:symbol>", views.TradeListApi.as_view(), name="trade-list"),
]
