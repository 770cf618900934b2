from django.urls import path

from alerts.api import views

urlpatterns = [
    path("alerts", views.AlertListApi.as_view(), name="alert-list"),
    path("alerts/<str:alert_id>/acknowledge", views.AlertAcknowledgeApi.as_view(), name="alert-acknowledge"),
    path("alerts/<str:alert_id>/resolve", views.AlertResolveApi.as_view(), name="alert-resolve"),
]
