from django.contrib import admin
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import Resolver404, include, path, re_path, resolve
from django.utils.encoding import escape_uri_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from finstream import health
from finstream.errors import bad_request


@csrf_exempt  # a POST has nothing to protect here: 404, not an HTML "CSRF verification failed"
def api_not_found(request, *args, **kwargs):
    """Any other /api/ URL: the API's error shape, not Django's HTML 404 page. An endpoint's URL with a
    slash too many or too few at its end (/api/v1/symbols/, /api/docs) is sent on to the endpoint: 308,
    which keeps the method and body of a POST, where a 301 turns it into a GET."""
    other_end = request.path_info[:-1] if request.path_info.endswith("/") else request.path_info + "/"
    if _is_endpoint(other_end):
        script_prefix = request.path[:len(request.path) - len(request.path_info)]
        query = request.META.get("QUERY_STRING", "")
        # The path as it came, quoted again: a %3F in it stays a character of the path, not a query.
        return redirect(escape_uri_path(script_prefix + other_end) + (f"?{query}" if query else ""),
                        permanent=True, preserve_request=True)
    return JsonResponse({"error": {
        "code": "not_found",
        "message": f"no API endpoint at {request.path[:200]}: the endpoints are listed at /api/docs/",
    }}, status=404)


def _is_endpoint(path_info: str) -> bool:
    try:
        return resolve(path_info).func is not api_not_found
    except Resolver404:
        return False


handler400 = bad_request

urlpatterns = [
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("metrics", health.metrics, name="prometheus-django-metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("market.api.urls")),
    path("api/v1/", include("alerts.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema", template_name="api/redoc.html"),
         name="api-redoc"),
    path("api-auth/", include("rest_framework.urls")),  # log in/out links of the browsable API
    re_path(r"^api/", api_not_found),
    path("", include("market.urls_pages")),  # the dashboard: /, /symbols/<s>/, /alerts/, /pipeline/
]
