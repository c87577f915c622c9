"""docs/operations/deployment.md's environment reference is generated from the code: every
variable the settings and gunicorn.conf.py read is in it, and it is the generator's output."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "operations" / "deployment.md").read_text()
START, END = "<!-- env-reference:start -->", "<!-- env-reference:end -->"


def documented() -> set[str]:
    table = DOC.split(START, 1)[1].split(END, 1)[0]
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", table, re.M))


def test_the_table_is_the_generators_output():
    out = subprocess.run([sys.executable, "scripts/env_reference.py"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    table = DOC.split(START, 1)[1].split(END, 1)[0]
    assert table.strip() == out.strip(), (
        "docs/operations/deployment.md is out of date: run "
        "python3 scripts/env_reference.py --write")


def test_every_variable_read_in_settings_is_documented():
    """Independently of the generator: any upper-case string literal passed to a call in the
    settings or gunicorn.conf.py that names an environment variable read there."""
    read = set()
    for source in ("settings/base.py", "settings/production.py", "gunicorn.conf.py"):
        text = (ROOT / source).read_text()
        read |= set(re.findall(r"\benv\.\w+\(\s*\"([A-Z0-9_]+)\"", text))
        read |= set(re.findall(r"os\.environ\.(?:get|setdefault)\(\s*\"([A-Z0-9_]+)\"", text))
        read |= set(re.findall(r"\b_int\(\s*[\"']([A-Z0-9_]+)[\"']", text))
    tree = ast.parse((ROOT / "settings" / "production.py").read_text())
    (required,) = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                   and getattr(n.targets[0], "id", "") == "REQUIRED_ENVIRONMENT"]
    assert {"SECRET_KEY", "DATABASE_URL", "FORWARDED_ALLOW_IPS", "SECURE_HSTS_SECONDS"} <= read
    assert read | set(required) <= documented(), (read | set(required)) - documented()


def test_env_example_names_only_real_variables():
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    compose_only = {"POSTGRES_PASSWORD", "REDIS_PASSWORD"}
    assert example - compose_only <= documented(), example - compose_only - documented()
