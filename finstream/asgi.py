"""ASGI entry point: HTTP through Django (the hottest reads just before it,
market/api/hot.py), WebSockets through Channels; HTTP requests traced when
tracing is on (finstream/tracing.py)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finstream.settings")
django.setup(set_prefix=False)

from finstream.asgi_handler import SyncStackASGIHandler  # noqa: E402 - needs Django set up first

django_asgi_app = SyncStackASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402 - needs Django set up first
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from finstream import tracing  # noqa: E402
from market.api.hot import HotReads  # noqa: E402
from streaming.routing import websocket_urlpatterns  # noqa: E402

http_app = HotReads(django_asgi_app)
if tracing.configure("web"):
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    # /metrics and the probes are scraped every few seconds: spans of them would bury the rest,
    # as would a span per ASGI send/receive of every request.
    http_app = OpenTelemetryMiddleware(http_app, tracer_provider=tracing.provider(),
                                       excluded_urls=r"/metrics/?$,/health/?$,/ready/?$",
                                       exclude_spans=["receive", "send"])

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)
