from django.urls import path

from ops import metrics, views

urlpatterns = [
    path("healthz", views.liveness),
    path("readyz", views.readiness),
    path("metrics", metrics.metrics_view),
]
