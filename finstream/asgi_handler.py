"""Django's ASGI handler with a synchronous request stack: one thread hop per request.

Every HTTP view FinStream serves is synchronous (DRF, the admin, the dashboard),
and so is nearly all middleware (Django's own are MiddlewareMixin classes). Run
in Django's async mode, each such middleware's process_request and
process_response go through sync_to_async, and the view through another:
measured here at ~36 thread hops and 5.5 ms of a 2-core machine per request
before any view code ran (bench/api_rest.py). Built in sync mode, the whole
middleware chain and the view run in one sync_to_async call per request, in
the request's own thread (so a DATABASE_POOL_SIZE pool serves the connections).
WebSockets do not pass through here: Channels serves them (finstream/asgi.py).
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class SyncStackASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
