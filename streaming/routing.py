"""WebSocket routes (docs/api.md), behind the Origin check of `websocket_application`."""

from channels.routing import URLRouter
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.urls import path, re_path

from streaming import consumers, metrics

websocket_urlpatterns = [
    path("ws/quotes/<str:symbol>", consumers.QuoteStreamConsumer.as_asgi()),
    path("ws/trades/<str:symbol>", consumers.TradeStreamConsumer.as_asgi()),
    path("ws/alerts", consumers.AlertStreamConsumer.as_asgi()),
    path("ws/stream", consumers.MultiplexStreamConsumer.as_asgi()),
    re_path(r"", consumers.UnknownPathConsumer.as_asgi()),
]


class BrowserOriginValidator(OriginValidator):
    """A page of another site is refused, as by Channels' AllowedHostsOriginValidator; a client
    that sends no Origin at all is let in. The check exists to stop a page in someone's browser
    from opening a stream as them (cross-site WebSocket hijacking), and browsers always send
    Origin; Python's websockets, websocat, wscat and a quant's script do not."""

    def valid_origin(self, parsed_origin) -> bool:
        return parsed_origin is None or super().valid_origin(parsed_origin)


def websocket_application():
    """The WebSocket routes behind the Origin check, against ALLOWED_HOSTS."""
    # Each endpoint's series from the start, at 0: a counter with no series yet has no rate either, and
    # a gauge none says "no data", not 0 connections.
    for consumer in (consumers.QuoteStreamConsumer, consumers.TradeStreamConsumer, consumers.AlertStreamConsumer,
                     consumers.MultiplexStreamConsumer):
        metrics.WEBSOCKET_DROPPED_CLIENTS.labels(endpoint=consumer.endpoint)
        metrics.WEBSOCKET_CONNECTIONS.labels(endpoint=consumer.endpoint)
    return BrowserOriginValidator(URLRouter(websocket_urlpatterns), settings.ALLOWED_HOSTS)
