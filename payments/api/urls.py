from django.urls import path

from payments.api import reports, routing, views, webhooks

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
    path("webhook_endpoints", webhooks.WebhookEndpointListView.as_view()),
    path("webhook_endpoints/<str:endpoint_id>", webhooks.WebhookEndpointDetailView.as_view()),
    path("webhook_endpoints/<str:endpoint_id>/roll_secret",
         webhooks.WebhookEndpointRollSecretView.as_view()),
    path("webhook_endpoints/<str:endpoint_id>/delivery_attempts",
         webhooks.WebhookEndpointAttemptsView.as_view()),
    path("events", webhooks.EventListView.as_view()),
    path("events/<str:event_id>", webhooks.EventDetailView.as_view()),
    path("events/<str:event_id>/redeliver", webhooks.EventRedeliverView.as_view()),
    path("reports", reports.ReportListView.as_view()),
    path("reports/<str:report_id>", reports.ReportDetailView.as_view()),
    path("reports/<str:report_id>/csv", reports.ReportCSVView.as_view()),
]
