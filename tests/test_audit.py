"""`make audit` (scripts/audit.py): the real pip-audit over this environment, against a local
OSV-compatible service that this test controls, so each answer is known: a vulnerability
fails it (1), an unreachable or incomplete service is "not audited" (2, never clean), and
only a full answer with nothing found is clean (0)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class FakeOSV(BaseHTTPRequestHandler):
    vulnerable: dict[str, dict] = {}
    failing: set[str] = set()
    queried: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = query["package"]["name"]
        type(self).queried.append(name)
        if name in type(self).failing:
            self.send_response(500)
            self.end_headers()
            return
        body = json.dumps({"vulns": [type(self).vulnerable[name]]}
                          if name in type(self).vulnerable else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def osv():
    FakeOSV.vulnerable, FakeOSV.failing, FakeOSV.queried = {}, set(), []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOSV)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/query"
    httpd.shutdown()
    httpd.server_close()


def audit(osv_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/audit.py", "--service", "osv", "--osv-url", osv_url,
         "--cache-dir", str(tmp_path / "cache"), "--tries", "1", "--timeout", "10"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_clean_only_when_every_package_was_answered(osv, tmp_path):
    result = audit(osv, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "packages audited: no known vulnerabilities" in result.stdout
    # the environment's packages were asked about, the project's pins among them
    assert {"django", "celery", "cryptography", "gunicorn"} <= set(FakeOSV.queried)


def test_a_known_vulnerability_fails_with_its_fix(osv, tmp_path):
    FakeOSV.vulnerable["django"] = {
        "id": "GHSA-test-0000-0000", "aliases": ["CVE-2099-0001"],
        "summary": "A planted advisory", "schema_version": "1.6.0",
        "affected": [{"package": {"name": "django", "ecosystem": "PyPI"},
                      "ranges": [{"type": "ECOSYSTEM",
                                  "events": [{"introduced": "0"}, {"fixed": "99.0"}]}]}],
    }
    result = audit(osv, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "VULNERABLE django" in result.stdout
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("VULNERABLE django")]
    assert "CVE-2099-0001" in line and "GHSA-test-0000-0000" in line
    assert line.endswith("fixed in: 99.0")


def test_a_service_error_is_not_a_clean_result(osv, tmp_path):
    FakeOSV.failing.add("django")
    result = audit(osv, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "NOT a clean result" in result.stdout


def test_an_unreachable_service_is_not_a_clean_result(tmp_path):
    result = audit("http://127.0.0.1:1/v1/query", tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "NOT a clean result" in result.stdout
    assert "no known vulnerabilities" not in result.stdout


def test_skipped_packages_are_not_audited():
    """What PyPI's JSON API answered from this machine (docs/operations/security.md): every
    package "not found" — pip-audit itself calls that "No known vulnerabilities found" and
    exits 0; the wrapper calls it not audited."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import audit as wrapper
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    report = {"dependencies": [
        {"name": "django", "skip_reason": "Dependency not found on PyPI and could not be "
                                          "audited: django (5.2.19)"},
        {"name": "httpx", "version": "0.28.1", "vulns": []}], "fixes": []}
    status, lines = wrapper.verdict(report)
    assert status == wrapper.NOT_AUDITED
    assert lines[0].startswith("NOT AUDITED django")
    assert wrapper.verdict({"dependencies": [], "fixes": []})[0] == wrapper.NOT_AUDITED
    assert wrapper.verdict({"dependencies": [{"name": "httpx", "version": "0.28.1",
                                              "vulns": []}]})[0] == wrapper.CLEAN
