"""Admin sign-in (settings/base.py, "Admin sign-in"): django-axes locks a username out from an
address after repeated failures; sessions expire when left idle."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.utils import timezone

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "right-pw-not-secret"


@pytest.fixture
def operator():
    return User.objects.create_superuser("ops", "ops@example.invalid", PASSWORD)


def sign_in(client, password: str, *, username: str = "ops", ip: str = "192.0.2.1"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_settings_lock_out_after_five_failures_for_fifteen_minutes():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME == timedelta(minutes=15)
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"
    assert settings.MIDDLEWARE[-1] == "axes.middleware.AxesMiddleware"


def test_the_sixth_attempt_is_refused_even_with_the_right_password(client, operator):
    for _ in range(5):
        resp = sign_in(client, "wrong-pw")
        assert not signed_in(client)
    assert resp.status_code == 429  # the fifth failure locks out
    resp = sign_in(client, PASSWORD)
    assert resp.status_code == 429
    assert not signed_in(client)
    assert client.get("/admin/").status_code == 302  # still sent to the login page


def test_the_lockout_is_per_username_and_address(client, operator):
    for _ in range(5):
        sign_in(client, "wrong-pw")
    # the same operator from another address is not locked out...
    resp = sign_in(client, PASSWORD, ip="192.0.2.2")
    assert resp.status_code == 302 and signed_in(client)


def test_a_success_before_the_limit_resets_the_count(client, operator):
    for _ in range(4):
        sign_in(client, "wrong-pw")
    assert sign_in(client, PASSWORD).status_code == 302
    client.logout()
    for _ in range(4):
        sign_in(client, "wrong-pw")
    assert sign_in(client, PASSWORD).status_code == 302 and signed_in(client)


def test_sessions_expire_when_idle_and_each_request_extends_them(client, operator):
    assert settings.SESSION_SAVE_EVERY_REQUEST is True
    assert settings.SESSION_COOKIE_AGE == 30 * 60
    assert sign_in(client, PASSWORD).status_code == 302
    key = client.session.session_key

    # nearly idle for the whole timeout: a request pushes the expiry a full timeout ahead
    almost = timezone.now() + timedelta(seconds=60)
    Session.objects.filter(session_key=key).update(expire_date=almost)
    assert client.get("/admin/").status_code == 200
    assert Session.objects.get(session_key=key).expire_date > almost

    # idle past the timeout: signed out
    Session.objects.filter(session_key=key).update(
        expire_date=timezone.now() - timedelta(seconds=1))
    resp = client.get("/admin/")
    assert resp.status_code == 302 and "/admin/login/" in resp["Location"]
