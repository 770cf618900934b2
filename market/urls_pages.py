"""The dashboard's pages (market/views.py), included at the root by finstream/urls.py."""

from django.contrib.auth import views as auth_views
from django.urls import path

from finstream.auth import AttemptLimitedAuthenticationForm
from market import views

urlpatterns = [
    path("", views.overview, name="dashboard-overview"),
    path("symbols/<str:symbol>/", views.symbol_detail, name="dashboard-symbol"),
    path("alerts/", views.alert_list, name="dashboard-alerts"),
    path("alerts/<str:alert_id>/row", views.alert_row, name="dashboard-alert-row"),
    path("alerts/<str:alert_id>/acknowledge", views.alert_acknowledge, name="dashboard-alert-acknowledge"),
    path("alerts/<str:alert_id>/resolve", views.alert_resolve, name="dashboard-alert-resolve"),
    path("pipeline/", views.pipeline, name="dashboard-pipeline"),
    # Any user may log in here to acknowledge alerts (the admin's log-in admits staff only).
    path("login/", auth_views.LoginView.as_view(template_name="dashboard/login.html", redirect_authenticated_user=True,
                                                authentication_form=AttemptLimitedAuthenticationForm),
         name="dashboard-login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="dashboard-overview"), name="dashboard-logout"),
]
