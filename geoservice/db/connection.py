"""Database access: the URL in force, a clear check of it, the async pool, sync connections."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row, tuple_row

from geoservice.db.cluster import Cluster
from geoservice.settings import DatabaseSettings

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

MIN_POSTGIS = (3, 1)

#: The newest migration's revision (``geoservice/db/migrations``): the schema every command that
#: reads or writes the data needs. Known here without Alembic, which takes longer to import and
#: to read the migrations than most commands take to start; a test checks it is Alembic's head,
#: so a new migration must bump it.
SCHEMA_REVISION = "0013"


class DatabaseError(RuntimeError):
    """The database cannot be used; the message names the (masked) URL and the fix."""


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def database_url(settings: DatabaseSettings, *, start: bool = False) -> str:
    """``DATABASE_URL`` when set; else the embedded cluster's URL (started when `start`)."""
    if settings.url:
        return settings.url

    cluster = Cluster(settings)
    if start:
        return cluster.up()
    if not cluster.initialised:
        raise DatabaseError(
            "no database: DATABASE_URL is unset and the embedded cluster does not exist yet; "
            "run `servicemap db up`"
        )
    return cluster.url()


def sqlalchemy_url(url: str) -> str:
    """The URL with SQLAlchemy's psycopg 3 driver name."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise DatabaseError(f"DATABASE_URL must start with postgresql://, got {mask_url(url)}")


def libpq_url(url: str) -> str:
    """The URL without a SQLAlchemy driver name (for psycopg)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def connect(url: str, **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
    """A sync connection (CLI, ingest) with dict rows; the error names the masked URL."""
    try:
        return psycopg.connect(libpq_url(url), row_factory=dict_row, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreachable"
        raise DatabaseError(
            f"cannot connect to {mask_url(url)}: {reason} "
            "(check DATABASE_URL, or unset it to use the embedded cluster: `servicemap db up`)"
        ) from exc


def check_database(url: str, *, schema: bool = False) -> str:
    """Connect, ensure PostGIS ≥ 3.1 is available (creating the extension); return its version.

    With `schema`, the same connection also checks that the schema is at ``SCHEMA_REVISION``.
    """
    with connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'postgis'"
        ).fetchone()
        if row is None:
            raise DatabaseError(
                f"{mask_url(url)} has no PostGIS: install it on the server "
                "(Debian: apt-get install postgresql-15-postgis-3)"
            )
        installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'postgis'")
        try:
            # only when missing: a standby (read-only) already has it, and refuses any DDL
            if installed.fetchone() is None:
                conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        except psycopg.Error as exc:
            raise DatabaseError(
                f"cannot enable PostGIS in {mask_url(url)}: {exc}".strip()
                + " (a superuser must run CREATE EXTENSION postgis)"
            ) from exc
        version = conn.execute("SELECT postgis_lib_version() AS v").fetchone()
        if schema and schema_revisions(conn) != [SCHEMA_REVISION]:
            raise DatabaseError(
                "the database schema is not up to date: run `servicemap db migrate`"
            )
    assert version is not None
    parsed = tuple(int(p) for p in str(version["v"]).split(".")[:2])
    if parsed < MIN_POSTGIS:
        raise DatabaseError(f"{mask_url(url)} has PostGIS {version['v']}; servicemap needs ≥ 3.1")
    return str(version["v"])


def schema_revisions(conn: psycopg.Connection[Any]) -> list[str]:
    """The revisions Alembic has recorded in a database (none before the first migration)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        # Alembic's table, where Alembic looks for it (the search path's first schema)
        if cur.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,):
            return []
        return sorted(str(v) for (v,) in cur.execute("SELECT version_num FROM alembic_version"))


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.set_autocommit(True)


def create_pool(url: str, settings: DatabaseSettings) -> AsyncConnectionPool:
    """The service's async pool (not opened yet): dict rows, autocommit, bounded statements.

    Connections are not pinged on every checkout (a round trip per request on the hot path):
    after a database restart a broken connection fails its request with 503 and the pool
    discards it when it comes back, so the service recovers by itself.
    """
    # jit off: the service's queries are short, and JIT compiling one (the planner turns it on
    # above a cost, e.g. a dense vector tile) costs more than it saves
    from psycopg_pool import AsyncConnectionPool  # the service's: commands do without it

    options = f"-c statement_timeout={settings.statement_timeout_ms} -c TimeZone=UTC -c jit=off"
    return AsyncConnectionPool(
        libpq_url(url),
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        timeout=settings.pool_timeout_s,
        open=False,
        configure=_configure,
        kwargs={"row_factory": dict_row, "options": options, "connect_timeout": 5},
    )
