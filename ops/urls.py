from django.urls import path

from ops import views

urlpatterns = [
    path("healthz", views.liveness),
    path("readyz", views.readiness),
]
