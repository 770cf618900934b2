"""`/health`: the process answers. `/ready`: everything it needs answers too."""

from django.http import JsonResponse
from django.views.decorators.http import require_safe

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
