"""`Authorization: Bearer sk_test_…|sk_live_…`: the key decides the merchant and the mode."""

from rest_framework import authentication, exceptions, permissions

from payments.services.merchants import api_key_authenticate


class APIKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            raise exceptions.NotAuthenticated(
                "No API key provided. Send 'Authorization: Bearer sk_test_…'.")
        scheme, _, raw_key = header.partition(" ")
        if scheme.lower() != "bearer" or not raw_key.strip():
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header. Send 'Authorization: Bearer sk_test_…'.")
        found = api_key_authenticate(raw_key.strip())
        if found is None:
            raise revoked()
        api_key, generation = found
        # the rate limit's round trip compares it with the shared one (throttling.py)
        request.api_key_generation = generation
        return api_key.merchant, api_key

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


def revoked() -> exceptions.AuthenticationFailed:
    # never echo the key back: it may be a live secret pasted in the wrong place
    return exceptions.AuthenticationFailed("Invalid or revoked API key.")


class IsMerchant(permissions.BasePermission):
    def has_permission(self, request, view):
        return request.auth is not None
