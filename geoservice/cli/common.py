"""What every CLI command shares: the settings and the database URL, failing in one line."""

from __future__ import annotations

from pydantic import ValidationError

from geoservice.cli.console import fail
from geoservice.db.cluster import ClusterError
from geoservice.db.connection import DatabaseError, check_database, database_url
from geoservice.settings import Settings, load_settings


def settings() -> Settings:
    """Settings from the environment; a bad value is a one-line failure."""
    try:
        return load_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"invalid setting {'.'.join(str(p) for p in first['loc'])}: {first['msg']}")


def database(start: bool = True, *, schema: bool = False) -> str:
    """The database URL in force, starting the embedded cluster when needed; fails clearly.

    With `schema`, the database must also be at the latest schema version (the same connection
    checks it).
    """
    try:
        url = database_url(settings().db, start=start)
        check_database(url, schema=schema)
    except (ClusterError, DatabaseError) as exc:
        fail(str(exc))
    return url


def migrated_database() -> str:
    """The database URL, failing with the fix when its schema is not at the latest version."""
    return database(schema=True)
