"""WebSocket routes (docs/api.md). finstream/asgi.py wraps them in
AllowedHostsOriginValidator, so a browser page from another origin is refused."""

from django.urls import path, re_path

from streaming import consumers

websocket_urlpatterns = [
    path("ws/quotes/<str:symbol>", consumers.QuoteStreamConsumer.as_asgi()),
    path("ws/trades/<str:symbol>", consumers.TradeStreamConsumer.as_asgi()),
    path("ws/alerts", consumers.AlertStreamConsumer.as_asgi()),
    path("ws/stream", consumers.MultiplexStreamConsumer.as_asgi()),
    re_path(r"", consumers.UnknownPathConsumer.as_asgi()),
]
