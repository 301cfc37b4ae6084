"""Helpers of the ingest tests: the CLI as a subprocess, a checksum of the facilities table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parents[2]
SERVICEMAP = str(Path(sys.executable).with_name("servicemap"))
LUOHU = (114.09, 22.52, 114.23, 22.62)


def run_cli(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`servicemap ARGS` in a subprocess against database `url`."""
    environment = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    environment.update(env)
    return subprocess.run(
        [SERVICEMAP, *args], env=environment, capture_output=True, text=True, timeout=300
    )


def checksum(url: str) -> str:
    """md5 of every facilities row, ordered by id: equal checksums = unchanged table."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT md5(coalesce(string_agg(f::text, '|' ORDER BY f.id), '')) FROM facilities f"
        ).fetchone()
    assert row is not None
    return str(row[0])


def rows(url: str, query: str, params: Any = None) -> list[dict[str, Any]]:
    """Rows of a query as dicts."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def last_run(url: str) -> dict[str, Any]:
    """The latest ingest_runs row."""
    return rows(url, "SELECT * FROM ingest_runs ORDER BY id DESC LIMIT 1")[0]
