from django.conf import settings
from django.contrib import admin
from django.core.exceptions import DisallowedHost, TooManyFieldsSent
from django.http import JsonResponse
from django.urls import include, path, re_path
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from finstream import health


@csrf_exempt  # a POST has nothing to protect here: 404, not an HTML "CSRF verification failed"
def api_not_found(request, *args, **kwargs):
    """Any other /api/ URL: the API's error shape, not Django's HTML 404 page."""
    return JsonResponse({"error": {
        "code": "not_found",
        "message": f"no API endpoint at {request.path[:200]}: the endpoints are listed at /api/docs/",
    }}, status=404)


def bad_request(request, exception):
    """Django's 400 (a Host not in ALLOWED_HOSTS, over DATA_UPLOAD_MAX_NUMBER_FIELDS parameters, ...): in the
    API's error shape under /api/, Django's page elsewhere."""
    if not request.path.startswith("/api/"):
        return defaults.bad_request(request, exception)
    if isinstance(exception, TooManyFieldsSent):
        message = f"more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} query parameters"
    elif isinstance(exception, DisallowedHost):
        message = "the Host header names no host this server answers for"
    else:
        message = "the request is malformed"
    return JsonResponse({"error": {"code": "bad_request", "message": message}}, status=400)


handler400 = bad_request

urlpatterns = [
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("", include("django_prometheus.urls")),  # /metrics
    path("admin/", admin.site.urls),
    path("api/v1/", include("market.api.urls")),
    path("api/v1/", include("alerts.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("api-auth/", include("rest_framework.urls")),  # log in/out links of the browsable API
    re_path(r"^api/", api_not_found),
    path("", include("market.urls_pages")),  # the dashboard: /, /symbols/<s>/, /alerts/, /pipeline/
]
