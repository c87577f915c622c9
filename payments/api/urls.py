from django.urls import path

from payments.api import routing, views

urlpatterns = [
    path("payment_methods", views.PaymentMethodListView.as_view()),
    path("payment_methods/<str:pm_id>", views.PaymentMethodDetailView.as_view()),
    path("payments", views.PaymentListView.as_view()),
    path("payments/<str:payment_id>", views.PaymentDetailView.as_view()),
    path("payments/<str:payment_id>/confirm", views.PaymentConfirmView.as_view()),
    path("payments/<str:payment_id>/capture", views.PaymentCaptureView.as_view()),
    path("payments/<str:payment_id>/cancel", views.PaymentCancelView.as_view()),
    path("refunds", views.RefundListView.as_view()),
    path("refunds/<str:refund_id>", views.RefundDetailView.as_view()),
    path("routing_rules", routing.RoutingRuleListView.as_view()),
    path("routing_rules/<str:rule_id>", routing.RoutingRuleDetailView.as_view()),
    path("retry_rules", routing.RetryRuleListView.as_view()),
    path("retry_rules/<str:rule_id>", routing.RetryRuleDetailView.as_view()),
]
