"""Every migration of our apps can be reversed, or says why not (docs/operations/migrations.md).

- Statically: an operation Django cannot reverse (RunPython without reverse_code, RunSQL
  without reverse_sql, or any operation whose `reversible` is false) is allowed only in a
  migration module that declares `IRREVERSIBLE_REASON = "…"` (why, and what to do instead of
  rolling back).
- For real: on a scratch Postgres database, every app is migrated to zero (or down to its
  last irreversible migration) and back up again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from django.apps import apps
from django.db import migrations
from django.db.migrations.loader import MigrationLoader

ROOT = Path(__file__).resolve().parents[1]


def _our_apps() -> list[str]:
    return sorted(config.label for config in apps.get_app_configs()
                  if Path(config.path).resolve().is_relative_to(ROOT)
                  and (Path(config.path) / "migrations").is_dir())


def _operations(operations):
    for operation in operations:
        if isinstance(operation, migrations.SeparateDatabaseAndState):
            yield from _operations(operation.database_operations)
        else:
            yield operation


def irreversible_operations(migration) -> list[str]:
    found = []
    for operation in _operations(migration.operations):
        if isinstance(operation, migrations.RunPython) and operation.reverse_code is None:
            found.append(f"RunPython({operation.code.__name__}) has no reverse_code")
        elif isinstance(operation, migrations.RunSQL) and operation.reverse_sql is None:
            found.append("RunSQL has no reverse_sql")
        elif not operation.reversible:
            found.append(f"{type(operation).__name__} is not reversible")
    return found


def _reason(migration) -> str:
    module = sys.modules[type(migration).__module__]
    reason = getattr(module, "IRREVERSIBLE_REASON", "")
    return reason.strip() if isinstance(reason, str) else ""


def _migrations() -> dict[tuple[str, str], object]:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    ours = set(_our_apps())
    return {key: migration for key, migration in loader.disk_migrations.items()
            if key[0] in ours}


def test_our_apps_are_found():
    assert {"payments", "providers", "sandboxes"} <= set(_our_apps())
    assert len(_migrations()) >= 20


def test_every_migration_is_reversible_or_says_why_not():
    problems = []
    for (app, name), migration in sorted(_migrations().items()):
        found = irreversible_operations(migration)
        if found and not _reason(migration):
            problems.append(f"{app}.{name}: {'; '.join(found)} — give it a reverse, or "
                            "declare IRREVERSIBLE_REASON = \"…\" in the module")
    assert not problems, "\n".join(problems)


def test_the_check_sees_an_irreversible_operation():
    def forwards(apps_, schema_editor):
        pass

    class Migration(migrations.Migration):
        operations = [migrations.RunPython(forwards),
                      migrations.RunSQL("SELECT 1"),
                      migrations.RunPython(forwards, migrations.RunPython.noop),
                      migrations.RunSQL("SELECT 1", "SELECT 1"),
                      migrations.SeparateDatabaseAndState(
                          database_operations=[migrations.RunSQL("SELECT 2")])]

    assert irreversible_operations(Migration("0001_x", "x")) == [
        "RunPython(forwards) has no reverse_code", "RunSQL has no reverse_sql",
        "RunSQL has no reverse_sql"]


def _targets() -> dict[str, str]:
    """Per app, how far down it can go: zero, or its last irreversible migration."""
    targets = {app: "zero" for app in _our_apps()}
    for (app, name), migration in sorted(_migrations().items()):
        if irreversible_operations(migration):
            targets[app] = name
    return targets


@pytest.mark.slow
def test_every_app_migrates_down_and_up_again_on_postgres():
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/switchyard")
    base, _, name = url.rpartition("/")
    scratch = f"{name[:40]}_migrations"
    admin = psycopg2.connect(f"{base}/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{scratch}" TEMPLATE template0')
    script = "\n".join([
        "from django.core.management import call_command",
        "call_command('migrate', verbosity=0)",
        *[f"call_command('migrate', {app!r}, {target!r}, verbosity=0); "
          f"call_command('migrate', verbosity=0); print('down and up:', {app!r}, {target!r})"
          for app, target in _targets().items()],
        # and nothing is left to make: the models and the migrations agree
        "call_command('makemigrations', check=True, dry_run=True, verbosity=0)",
    ])
    try:
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT,
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test",
                 "DATABASE_URL": f"{base}/{scratch}"})
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        admin.close()
    assert result.returncode == 0, result.stdout + result.stderr
    for app in _targets():
        assert f"down and up: {app} " in result.stdout
