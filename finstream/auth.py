"""Passwords guessed from one address.

After LOGIN_FAILURES_PER_MINUTE wrong passwords from one client address within a
minute, every log-in from that address fails until the minute is over, the
right password too: the dashboard's, the admin's and the API's HTTP Basic (all
go through Django's `authenticate`). Tokens are not guessed (40 random hex
digits). The client's address is the API throttle's (TRUSTED_PROXIES). The
failures are counted in Redis (Django's cache), shared by the web processes;
with Redis away they are not counted, as the API's throttle lets requests
through uncounted.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from redis.exceptions import RedisError
from rest_framework.authentication import TokenAuthentication
from rest_framework.throttling import BaseThrottle

log = logging.getLogger(__name__)
WINDOW_SECONDS = 60


def _failures_key(request) -> str | None:
    address = BaseThrottle().get_ident(request) if request is not None else None
    return f"login-failures:{address}" if address else None


class AttemptLimitedModelBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is not None and "\x00" in username:
            return None  # no user is named so, and PostgreSQL would refuse to look (HTTP Basic sends any bytes)
        key = _failures_key(request)
        try:
            if key and (cache.get(key) or 0) >= settings.LOGIN_FAILURES_PER_MINUTE:
                request.login_blocked = True  # for the log-in form's message
                log.warning("log-in refused: too many failures from %s", key.partition(":")[2])
                raise PermissionDenied  # authenticate() answers None, and asks no other backend
        except RedisError:
            key = None
        user = super().authenticate(request, username, password, **kwargs)
        if user is None and key:
            try:
                cache.add(key, 0, timeout=WINDOW_SECONDS)  # the minute starts at the first failure
                cache.incr(key)
            except (RedisError, ValueError):  # ValueError: expired between the two
                pass
        return user


class SaysWhenBlocked:
    """A log-in form that says why a blocked address's log-in failed."""

    def get_invalid_login_error(self):
        if getattr(self.request, "login_blocked", False):
            return ValidationError("Too many failed log-ins from your address: wait a minute, then try again.",
                                   code="too_many_failures")
        return super().get_invalid_login_error()


class AttemptLimitedAuthenticationForm(SaysWhenBlocked, AuthenticationForm):
    """The dashboard's log-in form."""


class AttemptLimitedAdminAuthenticationForm(SaysWhenBlocked, AdminAuthenticationForm):
    """The admin's log-in form (admin.site.login_form, market/admin.py)."""


class BearerTokenAuthentication(TokenAuthentication):
    """`Authorization: Bearer <key>`, the scheme most HTTP clients send a token with, beside DRF's
    `Token <key>`: the same tokens. Without it a Bearer header went unread: a read was served as
    anonymous, a wrong token never told it was wrong."""

    keyword = "Bearer"


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme of BearerTokenAuthentication (drf-spectacular's own one for
    TokenAuthentication would name both "tokenAuth")."""

    target_class = BearerTokenAuthentication
    name = "bearerAuth"
    priority = 1

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "The same tokens as tokenAuth."}
