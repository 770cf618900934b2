"""`/health`: the process answers. `/ready`: everything it needs answers too. `/metrics`: the
Prometheus metrics, for a scraper that reaches the web directly."""

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.http import require_safe
from django_prometheus.exports import ExportToDjangoView

from finstream.readiness import readiness_report


@require_safe
def health(request):
    return JsonResponse({"status": "ok"})


@require_safe
def ready(request):
    report = readiness_report()
    return JsonResponse(
        {"status": "ready" if report["ready"] else "not_ready", "checks": report["checks"]},
        status=200 if report["ready"] else 503,
    )


def metrics(request):
    """Behind a reverse proxy (TRUSTED_PROXIES), a request that came through it (it says whom for, in
    X-Forwarded-For) gets a 404: the metrics are for a scraper inside the network, not the internet.
    The check is on the path as Django decoded it, which no proxy rule on raw paths (/%6detrics) is."""
    if settings.TRUSTED_PROXIES and "HTTP_X_FORWARDED_FOR" in request.META:
        return JsonResponse({"error": {"code": "not_found", "message": "no endpoint at /metrics"}}, status=404)
    return ExportToDjangoView(request)
