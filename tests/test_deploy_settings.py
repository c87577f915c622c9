"""settings.production behind HTTPS: `manage.py check --deploy` is clean with a realistic
environment, a missing required variable is named, and gunicorn (not a header anyone can
send) decides what is HTTPS. Each runs in a subprocess with the production settings, as the
Docker image does."""

from __future__ import annotations

import ast
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[1]
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
REQUIRED = ("SECRET_KEY", "VAULT_KEYS", "VAULT_ACTIVE_KEY", "FINGERPRINT_KEY", "DATABASE_URL",
            "REDIS_URL", "ALLOWED_HOSTS")


def production_env(**overrides: str) -> dict[str, str]:
    """What a production container gets: every required variable with a production-grade
    value (a 50-character random SECRET_KEY), nothing from the test settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "SECURE_", "GUNICORN_", "CSRF_"))
           and k not in (*REQUIRED, "SANDBOXES_ENABLED", "CELERY_TASK_ALWAYS_EAGER", "DEBUG",
                         "WEB_CONCURRENCY", "PORT", "FORWARDED_ALLOW_IPS")}
    database = settings.DATABASES["default"]
    env.update({
        "DJANGO_SETTINGS_MODULE": "settings.production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "VAULT_KEYS": "k1=dGVzdC1vbmx5LXZhdWx0LWtleS1vbmUtMzJieXRlcyE=",
        "VAULT_ACTIVE_KEY": "k1",
        "FINGERPRINT_KEY": secrets.token_urlsafe(32),
        # the suite's database (/readyz reads it; nothing below writes to it)
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}"
                        f"/{database['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "ALLOWED_HOSTS": "api.example.com,127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": "https://ops.example.com",
        # not the checkout's .env (`make run` writes one): only what this environment says
        "ENV_FILE": os.devnull,
    })
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def run_manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_has_no_warning():
    result = run_manage(production_env(), "check", "--deploy", "--fail-level", "WARNING")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in result.stdout, output
    assert "WARNING" not in output and "security." not in output, output


def test_check_deploy_with_preload_has_no_warning_either():
    """HSTS preload is the domain owner's decision: on or off, the check is clean (off, its
    reminder W021 is silenced as a decision; on, nothing is silenced)."""
    result = run_manage(production_env(SECURE_HSTS_PRELOAD="true"),
                        "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues (0 silenced)" in result.stdout


@pytest.mark.parametrize("overrides, warning", [
    ({"SECRET_KEY": "too-short"}, "security.W009"),
    ({"SECURE_SSL_REDIRECT": "false"}, "security.W008"),
    ({"SECURE_HSTS_SECONDS": "0"}, "security.W004"),
    ({"SECURE_HSTS_INCLUDE_SUBDOMAINS": "false"}, "security.W005"),
])
def test_check_deploy_fails_on_a_weakened_setting(overrides, warning):
    """The check above can fail: each weakening an environment can make is reported."""
    result = run_manage(production_env(**overrides),
                        "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert warning in result.stdout + result.stderr


@pytest.mark.parametrize("name", REQUIRED)
def test_a_missing_required_variable_is_named(name):
    for value in (None, ""):
        env = production_env()
        if value is None:
            del env[name]
        else:
            env[name] = value
        result = run_manage(env, "check")
        assert result.returncode != 0
        assert "ImproperlyConfigured" in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert "missing required environment variable(s): " + name in last, last


def test_all_missing_variables_are_named_at_once():
    env = production_env()
    del env["DATABASE_URL"], env["REDIS_URL"]
    last = run_manage(env, "check").stderr.strip().splitlines()[-1]
    assert "DATABASE_URL, REDIS_URL" in last


def test_the_required_list_tested_is_the_settings_one():
    tree = ast.parse((ROOT / "settings" / "production.py").read_text())
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", "") == "REQUIRED_ENVIRONMENT"]
    assert ast.literal_eval(value) == REQUIRED


# --- HTTPS, as gunicorn and the proxy see it ---------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
        return None


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def _serve(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = _free_port()
    log = tmp_path / f"gunicorn-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", "--bind",
                                 f"127.0.0.1:{port}", "settings.wsgi:application"], cwd=ROOT,
                                env={**env, "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "2"},
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            _get(port, "/healthz", {"Host": "api.example.com"})
            return proc, port, log
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(log.read_text()[-3000:]) from None
            time.sleep(0.2)


def test_https_is_what_gunicorn_believes_from_the_proxy(tmp_path, db):
    """Served as the image serves it (gunicorn.conf.py, FORWARDED_ALLOW_IPS=127.0.0.1, the
    default): plain HTTP is redirected to HTTPS; X-Forwarded-Proto: https from the proxy is
    believed (no redirect, HSTS sent); the health endpoints answer over plain HTTP."""
    proc, port, log = _serve(tmp_path, production_env())
    try:
        host = {"Host": "api.example.com"}
        status, headers = _get(port, "/v1/schema", host)
        assert status == 301, log.read_text()[-3000:]
        assert headers["Location"] == "https://api.example.com/v1/schema"

        status, headers = _get(port, "/v1/schema", {**host, "X-Forwarded-Proto": "https"})
        assert status == 200, log.read_text()[-3000:]
        assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"

        for path in ("/healthz", "/readyz"):
            status, headers = _get(port, path, host)
            assert status == 200, (path, status, log.read_text()[-3000:])
            assert "Strict-Transport-Security" not in headers  # not sent over plain HTTP
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_x_forwarded_proto_from_anyone_else_is_not_believed(tmp_path):
    """A client that reaches the port directly (not from FORWARDED_ALLOW_IPS) cannot make a
    plain HTTP request pass for HTTPS by sending the header itself."""
    proc, port, log = _serve(tmp_path, production_env(FORWARDED_ALLOW_IPS="10.255.255.1"))
    try:
        status, headers = _get(port, "/v1/schema", {"Host": "api.example.com",
                                                    "X-Forwarded-Proto": "https"})
        assert status == 301, log.read_text()[-3000:]
        assert headers["Location"].startswith("https://")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
