"""`/health`: the process answers. `/ready`: everything it needs answers too."""

from django.http import JsonResponse
from django.views.decorators.http import require_GET

from finstream.readiness import readiness_report


@require_GET
def health(request):
    return JsonResponse({"status": "ok"})


@require_GET
def ready(request):
    report = readiness_report()
    return JsonResponse(
        {"status": "ready" if report["ready"] else "not_ready", "checks": report["checks"]},
        status=200 if report["ready"] else 503,
    )
