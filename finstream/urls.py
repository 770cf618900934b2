from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from finstream import health
from finstream.errors import bad_request


@csrf_exempt  # a POST has nothing to protect here: 404, not an HTML "CSRF verification failed"
def api_not_found(request, *args, **kwargs):
    """Any other /api/ URL: the API's error shape, not Django's HTML 404 page."""
    return JsonResponse({"error": {
        "code": "not_found",
        "message": f"no API endpoint at {request.path[:200]}: the endpoints are listed at /api/docs/",
    }}, status=404)


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
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema", template_name="api/redoc.html"),
         name="api-redoc"),
    path("api-auth/", include("rest_framework.urls")),  # log in/out links of the browsable API
    re_path(r"^api/", api_not_found),
    path("", include("market.urls_pages")),  # the dashboard: /, /symbols/<s>/, /alerts/, /pipeline/
]
