"""Set-up shared by the benchmarks: environment, a fresh database, Django."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlparse


def configure(*, database: str, redis_db: int, **env: str) -> None:
    """Point the benchmark at its own Postgres database and Redis db (unless DATABASE_URL /
    REDIS_URL say otherwise), on the test settings. Call before importing Django."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{database}")
    os.environ.setdefault("REDIS_URL", f"redis://127.0.0.1:6379/{redis_db}")
    for name, value in env.items():
        os.environ.setdefault(name, value)
    os.environ["DJANGO_SETTINGS_MODULE"] = "settings.test"


def fresh_database() -> None:
    """Drop and create the benchmark's database: bench data is throwaway, and an old one may
    hold a migration history that no longer matches the code."""
    import psycopg2

    url = urlparse(os.environ["DATABASE_URL"])
    name = url.path.lstrip("/")
    conn = psycopg2.connect(dbname="postgres", user=url.username or "postgres",
                            host=url.hostname or "127.0.0.1", port=url.port or 5432)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
