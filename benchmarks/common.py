"""What the benchmarks share: a migrated database of their own, dropped afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from geoservice.db.connection import database_url
from geoservice.db.migrate import upgrade
from geoservice.settings import DatabaseSettings


@contextmanager
def own_database(tag: str) -> Iterator[str]:
    """URL of a new, migrated database on the server in force (never the demo database)."""
    server = database_url(DatabaseSettings(), start=True)
    name = f"bench_{tag}_{os.getpid()}"
    url = f"{server.rpartition('/')[0]}/{name}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
