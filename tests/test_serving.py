"""Production serving: gunicorn.conf.py loads, says what the docs say, and serves the app
(the same command line as `make run`, the Dockerfile and docker-compose.yml)."""

import os
import runpy
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ops.request_id import request_id_for

ROOT = Path(__file__).resolve().parents[1]
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
CONF = runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GUNICORN_") and k not in ("WEB_CONCURRENCY", "PORT")}
    env.update(extra)
    return env


def _printed_config(env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run([GUNICORN, "-c", "gunicorn.conf.py", "--print-config",
                          "settings.wsgi:application"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    config = {}
    for line in out.stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            config[name.strip()] = value.strip()
    return config


def test_check_config_loads_the_app():
    out = subprocess.run([GUNICORN, "-c", "gunicorn.conf.py", "--check-config",
                          "settings.wsgi:application"], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_production_values_are_the_documented_ones():
    config = _printed_config(_env(DATABASE_URL="postgres://postgres@127.0.0.1:5432/x"))
    assert config["worker_class"] == "gthread"
    assert config["workers"] == str(os.cpu_count())
    assert config["threads"] == "16"
    assert config["timeout"] == "120"
    assert config["graceful_timeout"] == "30"
    assert config["keepalive"] == "75"
    assert config["preload_app"] == "False"
    assert config["max_requests"] == "0"
    assert config["accesslog"] == "-"
    assert "x-request-id" in config["access_log_format"]
    assert config["forwarded_allow_ips"] == "['127.0.0.1', '::1']"
    assert config["bind"] == "['0.0.0.0:8000']"


def test_environment_overrides():
    config = _printed_config(_env(DATABASE_URL="postgres://x/y", WEB_CONCURRENCY="3",
                                  GUNICORN_THREADS="24", PORT="9000",
                                  FORWARDED_ALLOW_IPS="10.0.0.0/8"))
    assert (config["workers"], config["threads"]) == ("3", "24")
    assert config["bind"] == "['0.0.0.0:9000']"
    assert config["forwarded_allow_ips"] == "['10.0.0.0/8']"


def test_other_worker_classes_get_one_thread():
    """gunicorn runs gthread for "sync" with threads > 1: the threads default follows."""
    config = _printed_config(_env(DATABASE_URL="postgres://x/y", GUNICORN_WORKER_CLASS="sync"))
    assert (config["worker_class"], config["threads"]) == ("sync", "1")


def test_embedded_default_is_one_process(tmp_path):
    embedded = CONF["embedded_default"]
    env_file = tmp_path / ".env"
    assert embedded({}, str(env_file))  # no .env, no DATABASE_URL: SQLite
    env_file.write_text("SECRET_KEY=x\nDATABASE_URL=\n")
    assert embedded({}, str(env_file))
    env_file.write_text("SECRET_KEY=x\nDATABASE_URL=postgres://h/db\n")
    assert not embedded({}, str(env_file))
    assert not embedded({"DATABASE_URL": "postgres://h/db"}, str(tmp_path / "none"))


def test_the_image_compose_and_make_run_use_the_config():
    assert '"gunicorn", "-c", "gunicorn.conf.py"' in (ROOT / "Dockerfile").read_text()
    assert '"gunicorn", "-c", "gunicorn.conf.py"' in (ROOT / "docker-compose.yml").read_text()
    makefile = (ROOT / "Makefile").read_text()
    run_recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "gunicorn -c gunicorn.conf.py" in run_recipe
    assert "runserver" in makefile.split("\ndev:", 1)[1].split("\n\n", 1)[0]


def test_request_id_kept_when_plain_replaced_otherwise():
    assert request_id_for("edge-1234_abc.def") == "edge-1234_abc.def"
    for bad in (None, "", "a b", "x" * 65, "id\r\nSet-Cookie: x", "é"):
        assert request_id_for(bad).startswith("req_")


@pytest.mark.django_db
def test_every_response_has_a_request_id(client):
    assert client.get("/healthz").headers["X-Request-Id"].startswith("req_")
    assert client.get("/nowhere", HTTP_X_REQUEST_ID="lb-42").headers["X-Request-Id"] == "lb-42"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gunicorn_serves_the_app_with_the_config(tmp_path):
    """What `make run` starts (there on SQLite, after migrate and seed_demo; here on the
    test settings): gunicorn with gunicorn.conf.py answers /healthz, with a request id that
    the access log records."""
    port = _free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([GUNICORN, "-c", "gunicorn.conf.py", "--bind",
                                 f"127.0.0.1:{port}", "settings.wsgi:application"], cwd=ROOT,
                                env=_env(WEB_CONCURRENCY="1", GUNICORN_THREADS="2"),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                            timeout=5) as resp:
                    status, request_id = resp.status, resp.headers["X-Request-Id"]
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        assert status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "Using worker: gthread" in text
    assert f"rid={request_id}" in text
