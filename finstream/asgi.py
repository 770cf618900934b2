"""ASGI entry point: HTTP through Django (the hottest reads just before it,
market/api/hot.py), WebSockets through Channels; HTTP requests traced when
tracing is on (finstream/tracing.py)."""

import gc
import os
from http import HTTPStatus

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finstream.settings")
django.setup(set_prefix=False)

from finstream.asgi_handler import SyncStackASGIHandler  # noqa: E402 - needs Django set up first

django_asgi_app = SyncStackASGIHandler()

from channels.routing import ProtocolTypeRouter  # noqa: E402 - needs Django set up first

from finstream import tracing  # noqa: E402
from finstream.env import env_bool  # noqa: E402
from market.api.hot import HotReads  # noqa: E402
from streaming.routing import websocket_application  # noqa: E402

http_app = HotReads(django_asgi_app)
if tracing.configure("web"):
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    # /metrics and the probes are scraped every few seconds: spans of them would bury the rest,
    # as would a span per ASGI send/receive of every request.
    http_app = OpenTelemetryMiddleware(http_app, tracer_provider=tracing.provider(),
                                       excluded_urls=r"/metrics/?$,/health/?$,/ready/?$",
                                       exclude_spans=["receive", "send"])


def _name_every_status() -> None:
    """daphne sets a response's code alone, and Twisted names only the codes of RFC 2616 (1999): a
    throttled request's status line read "429 Unknown Status". Named here from Python's table."""
    try:
        from twisted.web import http as twisted_http
    except ImportError:  # served by another ASGI server
        return
    for status in HTTPStatus:
        twisted_http.RESPONSES.setdefault(status.value, status.phrase.encode("ascii"))


_name_every_status()

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": websocket_application(),
    }
)

# Full garbage collections stop the event loop, and with it every client's
# stream: with 1,000 WebSocket clients one took 70-210 ms, several times in a
# 20 s run (bench/websocket_fanout.py). Everything imported so far lives as
# long as the process, so it is frozen out of the collector's sight (after a
# collection, so that no garbage is frozen with it). And with the default
# young-generation threshold (700) the objects a fan-out round holds for a few
# milliseconds were scanned while still alive and promoted, and soon made a full
# collection due; at 50,000 reference counts free them first, and there was no
# full collection in 30 s runs. Off (WEB_GC_TUNING=0) in the test suite, which
# imports this module into a process that is no server.
if env_bool("WEB_GC_TUNING", True):
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
