"""The Dockerfile, docker-compose.yml and .env.example (no Docker engine runs here: these
read the files and check the properties the deployment relies on), and the web container's
health check script against a real server."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
# what compose interpolates: the file without its comment lines
COMPOSE_CODE = "\n".join(line for line in COMPOSE_TEXT.splitlines()
                         if not line.lstrip().startswith("#"))
SERVICES = COMPOSE["services"]
APP_SERVICES = ("migrate", "web", "worker", "beat")


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, line
            values[name.strip()] = value
    return values


def _runtime_stage() -> str:
    return DOCKERFILE.rsplit("\nFROM ", 1)[1]


# --- Dockerfile -------------------------------------------------------------------------------
def test_image_is_multi_stage_and_runs_as_a_non_root_user():
    assert len(re.findall(r"^FROM ", DOCKERFILE, re.M)) >= 2
    assert "COPY --from=builder" in DOCKERFILE
    users = re.findall(r"^USER\s+(\S+)", _runtime_stage(), re.M)
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    uid = re.search(r"useradd [^\n]*--uid (\d+)", DOCKERFILE)
    assert uid and user in (uid.group(1), "switchyard") and int(uid.group(1)) >= 1000


def test_image_healthcheck_asks_readyz_without_curl():
    (check,) = re.findall(r"^HEALTHCHECK .*?CMD (.+)$", DOCKERFILE, re.M | re.S)
    assert "/readyz" in check and "scripts/healthcheck.py" in check
    assert "curl" not in check
    assert (ROOT / "scripts" / "healthcheck.py").exists()


def test_build_time_collectstatic_gets_every_required_variable():
    """The image runs collectstatic with production settings at build time: a required
    variable missing there fails the build."""
    from tests.test_deploy_settings import REQUIRED

    run = DOCKERFILE.split("manage.py collectstatic", 1)[0].rsplit("\nRUN ", 1)[1]
    for name in REQUIRED:
        assert f"{name}=" in run, name
    assert "DJANGO_SETTINGS_MODULE=settings.production" in DOCKERFILE


# --- docker-compose.yml --------------------------------------------------------------------
def test_stack_has_its_services_from_one_image():
    assert set(SERVICES) == {"postgres", "redis", *APP_SERVICES}
    for name in APP_SERVICES:
        assert SERVICES[name]["image"] == "switchyard:local", name
        assert SERVICES[name]["env_file"] == ".env", name


def test_data_stores_have_healthchecks_and_the_app_waits_for_them():
    for store in ("postgres", "redis"):
        assert SERVICES[store]["healthcheck"]["test"], store
    for name in APP_SERVICES:
        depends = SERVICES[name]["depends_on"]
        assert depends["postgres"] == {"condition": "service_healthy"}, name
    for name in ("web", "worker", "beat"):
        depends = SERVICES[name]["depends_on"]
        assert depends["redis"] == {"condition": "service_healthy"}, name
        # migrations are applied, once, before any of them starts
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert migrate["restart"] == "no"


def test_web_uses_the_image_healthcheck_and_the_worker_pings_itself():
    assert "healthcheck" not in SERVICES["web"]  # the Dockerfile's: /readyz
    worker_check = " ".join(SERVICES["worker"]["healthcheck"]["test"])
    # $$: compose's escape for $, so that the container's shell expands $HOSTNAME (the
    # worker's node name is celery@<hostname>), not compose from the host's environment
    assert "inspect ping" in worker_check and "-d celery@$$HOSTNAME" in worker_check


def test_exactly_one_beat():
    beats = [name for name, service in SERVICES.items()
             if " beat" in " ".join(service.get("command") or [])]
    assert beats == ["beat"]
    beat = SERVICES["beat"]
    assert "scale" not in beat
    assert beat.get("deploy", {}).get("replicas", 1) == 1
    # and no other process embeds a beat in its worker (celery worker -B)
    for name, service in SERVICES.items():
        command = service.get("command") or []
        assert "-B" not in command and "--beat" not in command, name


def test_no_literal_password_or_secret():
    for name, service in SERVICES.items():
        environment = service.get("environment") or {}
        for key, value in environment.items():
            value = str(value)
            if re.search(r"PASSWORD|SECRET|_KEY|AUTH|TOKEN", key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), (name, key, value)
            # a URL with credentials takes its password from .env
            for credentials in re.findall(r"://([^@/\s]*)@", value):
                password = credentials.partition(":")[2]
                assert password.startswith("${") and ":?" in password, (name, key, value)
    assert "postgres:postgres@" not in COMPOSE_TEXT


def test_a_missing_password_stops_compose():
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        uses = re.findall(r"\$\{" + name + r"(:?[?-])?[^}]*\}", COMPOSE_CODE)
        assert uses and all(mode == ":?" for mode in uses), (name, uses)


def test_every_compose_variable_is_in_env_example():
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", COMPOSE_CODE))
    assert used >= {"POSTGRES_PASSWORD", "REDIS_PASSWORD"}
    assert used <= set(env_example()), used - set(env_example())


def test_env_example_lists_the_required_variables_without_secrets():
    from tests.test_deploy_settings import REQUIRED

    example = env_example()
    # DATABASE_URL and REDIS_URL: compose builds them from the passwords
    for name in set(REQUIRED) - {"DATABASE_URL", "REDIS_URL"}:
        assert name in example, name
    for name in ("SECRET_KEY", "VAULT_KEYS", "FINGERPRINT_KEY", "POSTGRES_PASSWORD",
                 "REDIS_PASSWORD"):
        assert example[name] == "", f"{name} has a value in .env.example"


def test_env_example_is_not_ignored_and_env_is():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert ignored.returncode == 0
    example = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=ROOT)
    assert example.returncode == 1


# --- scripts/healthcheck.py -----------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    status = 200
    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).seen.append((self.path, self.headers.get("Host", "")))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.seen = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _check(port: int, allowed_hosts: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "scripts/healthcheck.py", "/readyz"], cwd=ROOT,
                          env={"PORT": str(port), "ALLOWED_HOSTS": allowed_hosts,
                               "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("allowed, host", [
    ("api.example.com,127.0.0.1", "api.example.com"),
    (".example.com", "example.com"),
    ("*", "localhost"),
])
def test_healthcheck_is_healthy_on_200_with_an_allowed_host(server, allowed, host):
    _Handler.status = 200
    result = _check(server.server_address[1], allowed)
    assert result.returncode == 0, result.stderr
    assert _Handler.seen == [("/readyz", host)]


@pytest.mark.parametrize("status", [503, 400, 301])
def test_healthcheck_is_unhealthy_otherwise(server, status):
    _Handler.status = status
    result = _check(server.server_address[1], "api.example.com")
    assert result.returncode == 1
    assert str(status) in result.stderr


def test_healthcheck_is_unhealthy_when_nothing_listens(server):
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    assert _check(port, "api.example.com").returncode == 1
