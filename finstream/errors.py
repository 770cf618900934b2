"""The API's one error shape: {"error": {"code": "...", "message": "...", "details": ...}}."""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.core.exceptions import DisallowedHost, TooManyFieldsSent
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.views import defaults
from django.views.debug import SafeExceptionReporterFilter
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from finstream.logs import error_text
from streaming.redis import REDIS_AWAY

log = logging.getLogger(__name__)
security_log = logging.getLogger("django.security.DisallowedHost")


class ApiError(exceptions.APIException):
    """A domain error with a stable code, e.g. unknown_symbol (404)."""

    def __init__(self, *, code: str, message: str, status_code: int = status.HTTP_400_BAD_REQUEST,
                 details: object = None) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.details = details


def _code_for(exc: exceptions.APIException) -> str:
    if isinstance(exc, ApiError):
        return exc.error_code
    if isinstance(exc, exceptions.ValidationError):
        return "invalid_parameter"
    if isinstance(exc, exceptions.NotFound):
        return "not_found"
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else "error"


# PostgreSQL did not answer (down, restarting, the connection cut), as REDIS_AWAY says of Redis.
DATABASE_AWAY = (OperationalError, InterfaceError)
# What /ready calls each dependency, for a request that found it away.
_DEPENDENCY_ERRORS = ((REDIS_AWAY, "Redis"), (DATABASE_AWAY, "PostgreSQL"))
RETRY_AFTER_SECONDS = 5


def dependency_away(exc: BaseException) -> str | None:
    """Which service did not answer, when `exc` says one did not: "Redis" or "PostgreSQL"."""
    for errors, name in _DEPENDENCY_ERRORS:
        if isinstance(exc, errors):
            return name
    return None


def _service_unavailable(exc) -> Response | None:
    """503 in the error shape when Redis or PostgreSQL did not answer: the client's request was fine."""
    name = dependency_away(exc)
    if name is None:
        return None
    log.warning("API: %s did not answer: %s", name, error_text(exc))
    body = {"error": {"code": "service_unavailable",
                      "message": f"{name} did not answer; try again shortly (/ready shows what is down)"}}
    return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


class DependencyAwayMiddleware:
    """A page whose view found PostgreSQL or Redis away: a 503 page saying which, not a 500 (with DEBUG on,
    Django's traceback page). The page is plain: the site's layout reads the session, from PostgreSQL."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        name = dependency_away(exception)
        if name is None:
            return None
        log.warning("page %s: %s did not answer: %s", request.path, name, error_text(exception))
        response = render(request, "unavailable.html", {"name": name}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


def api_exception_handler(exc, context):
    away = _service_unavailable(exc)
    if away is not None:
        return away
    # Django's own 404 and 403 (raised by DRF itself too, e.g. for ?format=xml): DRF answers them as its own,
    # and so must the body below.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        details = exc.detail
        first = next(iter(details.items())) if isinstance(details, dict) and details else None
        message = f"{first[0]}: {' '.join(map(str, first[1]))}" if first else "invalid request"
        body = {"error": {"code": "invalid_parameter", "message": message, "details": details}}
    else:
        message = str(exc.detail)
        if isinstance(exc, exceptions.NotAuthenticated):
            message += " Log in (a session) or send `Authorization: Token <key>` (manage.py drf_create_token <user>)."
        body = {"error": {"code": _code_for(exc), "message": message}}
        if isinstance(exc, ApiError) and exc.details is not None:
            body["error"]["details"] = exc.details
    return Response(body, status=response.status_code, headers=getattr(response, "headers", None) and {
        k: v for k, v in response.headers.items() if k in ("WWW-Authenticate", "Retry-After", "Allow")
    })


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """What Django's debug page (DEBUG on) and error mails show of the settings: those named like
    secrets hidden, as Django hides them, and every URL too (DATABASE_URL, REDIS_URL,
    CELERY_BROKER_URL and the like carry the services' passwords)."""

    hidden_settings = re.compile("API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|URL", flags=re.I)


class NulInRequest(ValueError):
    """A NUL character (%00) in the path or a query parameter: no symbol, id or value has one, and
    PostgreSQL refuses to compare text holding one (a 500 in any view that looked it up)."""


def bad_request(request, exception):
    """Django's 400 (a Host not in ALLOWED_HOSTS, over DATA_UPLOAD_MAX_NUMBER_FIELDS parameters, ...): in the
    API's error shape under /api/, Django's page elsewhere."""
    if not request.path.startswith("/api/"):
        return defaults.bad_request(request, exception)
    if isinstance(exception, TooManyFieldsSent):
        message = f"more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} query parameters"
    elif isinstance(exception, DisallowedHost):
        message = "the Host header names no host this server answers for (ALLOWED_HOSTS lists them)"
    elif isinstance(exception, NulInRequest):
        message = "a NUL character (%00) in the path or a parameter"
    else:
        message = "the request is malformed"
    return JsonResponse({"error": {"code": "bad_request", "message": message}}, status=400)


def client_errors_middleware(get_response):
    """Requests Django refuses as malformed, answered as `bad_request` before any view runs; and
    requests with a NUL character in the path or a query parameter (NulInRequest).

    Over DATA_UPLOAD_MAX_NUMBER_FIELDS parameters: Django refuses them where a view first reads
    them, and with DEBUG on its error page reads them again and fails with a 500. A Host not in
    ALLOWED_HOSTS under /api/: with DEBUG on, Django answers with its HTML debug page, not the
    API's error shape (pages keep that page, which says what to add to ALLOWED_HOSTS)."""

    def middleware(request):
        try:
            if "\x00" in request.path or any("\x00" in key or "\x00" in value
                                              for key, values in request.GET.lists() for value in values):
                return bad_request(request, NulInRequest())
            if request.path.startswith("/api/"):
                request.get_host()
        except TooManyFieldsSent as error:
            return bad_request(request, error)
        except DisallowedHost as error:
            # Logged as Django logs it when it answers the 400 itself: a probe of the server shows in the logs.
            security_log.error(str(error), extra={"status_code": 400, "request": request})
            return bad_request(request, error)
        return get_response(request)

    return middleware
