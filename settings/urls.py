from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from payments.admin import needs_attention_view
from payments.api import provider_webhooks

urlpatterns = [
    path("v1/schema", SpectacularAPIView.as_view(authentication_classes=[],
                                                 permission_classes=[], throttle_classes=[]),
         name="schema"),
    path("v1/docs", SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[],
                                                   permission_classes=[], throttle_classes=[]),
         name="docs"),
    path("v1/", include("payments.api.urls")),
    path("provider_webhooks/<str:account_id>", provider_webhooks.receive,
         name="provider-webhooks"),
    # operators' list of what is stuck; before the admin's own URLs, in its login and views
    path("admin/payments/needs-attention/", admin.site.admin_view(needs_attention_view),
         name="payments_needs_attention"),
    path("admin/", admin.site.urls),
    path("", include("ops.urls")),
]

handler400 = "payments.api.errors.bad_request_view"
handler404 = "payments.api.errors.not_found_view"
handler500 = "payments.api.errors.server_error_view"
