"""The alerts REST endpoints: GET /api/v1/alerts (open to read) and
POST /api/v1/alerts/{id}/acknowledge|resolve (an authenticated user)."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from alerts import selectors, services
from alerts.api.serializers import AlertPageSerializer, AlertQuerySerializer, AlertSerializer
from finstream.errors import ApiError
from market.api.pagination import Position, next_link
from market.api.serializers import ErrorSerializer
from market.api.views import UNKNOWN_SYMBOL, ReadApi, known_symbol, query

ALERT_ID = OpenApiParameter("alert_id", str, OpenApiParameter.PATH, description="An alert's id, e.g. al-3f9c…")
WRITE_RESPONSES = {
    200: AlertSerializer,
    401: OpenApiResponse(ErrorSerializer, description="Not authenticated: log in, or send `Authorization: Token …`."),
    403: OpenApiResponse(ErrorSerializer, description="Not allowed (e.g. a session POST without its CSRF token)."),
    404: OpenApiResponse(ErrorSerializer, description="unknown_alert"),
}


class AlertListApi(ReadApi):
    @extend_schema(
        operation_id="alerts_list", summary="Alerts, newest first, a page at a time", parameters=[AlertQuerySerializer],
        responses={200: AlertPageSerializer, 400: OpenApiResponse(ErrorSerializer, description="A bad parameter."),
                   404: UNKNOWN_SYMBOL},
    )
    def get(self, request):
        params = query(AlertQuerySerializer, request)
        if "symbol" in params:
            known_symbol(params["symbol"])
        after = params.get("cursor")
        limit = params["limit"]
        rows = selectors.alert_page(
            symbol=params.get("symbol"), severity=params.get("severity"), type=params.get("type"),
            state=params.get("state"), start=params.get("start"), end=params.get("end"),
            detected_since=params.get("detected_since"),
            after=None if after is None else (after.time, after.id), descending=params["sort"] == "desc",
            limit=limit + 1,
        )
        return Response(AlertPageSerializer({
            "alerts": rows[:limit],
            "next": next_link(request, rows, limit=limit, sort=params["sort"], listing=params["listing"],
                              position_of=lambda alert: Position(alert.event_time, alert.id)),
        }).data)


def _alert(alert_id: str):
    alert = None if "\x00" in alert_id else selectors.alert_get(alert_id=alert_id)  # no id holds a NUL
    if alert is None:
        raise ApiError(code="unknown_alert", message=f"no alert {alert_id[:70]!r}: GET /api/v1/alerts lists them",
                       status_code=status.HTTP_404_NOT_FOUND)
    return alert


class WriteApi(APIView):
    """A write endpoint: it needs a user, but a method it does not take is a 405 whoever asks (DRF
    checks the user first: an anonymous GET was told to log in for a request that cannot work)."""

    permission_classes = [IsAuthenticated]

    def initial(self, request, *args, **kwargs):
        if request.method.lower() not in self.http_method_names or not hasattr(self, request.method.lower()):
            raise MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)


class AlertAcknowledgeApi(WriteApi):

    @extend_schema(operation_id="alerts_acknowledge", summary="Acknowledge an alert (idempotent)", request=None,
                   parameters=[ALERT_ID], responses=WRITE_RESPONSES)
    def post(self, request, alert_id: str):
        alert = services.alert_acknowledge(alert=_alert(alert_id), user=request.user)
        return Response(AlertSerializer(alert).data)


class AlertResolveApi(WriteApi):

    @extend_schema(operation_id="alerts_resolve", summary="Resolve an alert; also acknowledges it (idempotent)",
                   request=None, parameters=[ALERT_ID], responses=WRITE_RESPONSES)
    def post(self, request, alert_id: str):
        alert = services.alert_resolve(alert=_alert(alert_id), user=request.user)
        return Response(AlertSerializer(alert).data)
