"""Bring a database's schema to the latest version with Alembic, and compare it with the models.

The models (``geoservice.db.models``) describe every table; the migrations are frozen history.
``schema_differences`` is Alembic's autogenerate comparison between the two (with the one filter
that the test suite and ``alembic revision --autogenerate`` in ``migrations/env.py`` share), plus
what autogenerate does not look at: primary keys, CHECK constraints (compared as PostgreSQL
normalises them), partitioning, and each index's access method and operator classes.

Commands check a database's schema against ``connection.SCHEMA_REVISION`` instead of importing
Alembic: a new migration bumps it to its own revision (a test compares it with `head_revision`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from geoalchemy2 import alembic_helpers
from sqlalchemy import CheckConstraint, Column, Connection, MetaData, Table, create_engine, pool
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text as sa_text
from sqlalchemy.schema import SchemaItem

from geoservice.db.connection import check_database, sqlalchemy_url
from geoservice.db.models import metadata

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: Tables in the database that the models do not describe: Alembic's own, PostGIS's (topology
#: lives in its own schema, which the comparison does not look at), and the monthly partitions
#: of toilet_readings, which toilet_readings_maintain() creates as time passes.
UNMODELLED_TABLES = frozenset({"alembic_version", "spatial_ref_sys"})
PARTITION = re.compile(r"toilet_readings_y\d{4}m\d{2}")


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Whether Alembic reflects a database object at all (tables the models leave out: no)."""
    if type_ == "table" and name is not None:
        return name not in UNMODELLED_TABLES and not PARTITION.fullmatch(name)
    return True


def include_object(
    obj: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: SchemaItem | None
) -> bool:
    """Whether Alembic compares an object (GeoAlchemy2's filter of spatial tables, then ours)."""
    # geoalchemy2's helpers carry no annotations
    spatial = alembic_helpers.include_object(obj, name, type_, reflected, compare_to)  # type: ignore[no-untyped-call]
    return bool(spatial) and include_name(name, type_, {})


#: Options of every comparison: types and server defaults compared too, nothing left out.
COMPARE_OPTIONS: dict[str, Any] = {
    "include_name": include_name,
    "include_object": include_object,
    "compare_type": True,
    "compare_server_default": True,
}


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and this URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest migration's revision id (as Alembic reads it from the migration scripts)."""
    head = ScriptDirectory.from_config(alembic_config("postgresql://x/y")).get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    """The revision a database is at (None before the first migration)."""
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str]:
    """Check PostGIS, migrate to `revision`; return (before, after) revisions."""
    check_database(url)
    before = current_revision(url)
    command.upgrade(alembic_config(url), revision)
    return before, current_revision(url) or ""


def schema_differences(url: str) -> list[Any]:
    """What autogenerate would change to make the database at `url` match the models ([]: none)."""
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=COMPARE_OPTIONS)
        found: list[Any] = list(compare_metadata(context, metadata))
        found += _beyond_autogenerate(conn)
        conn.rollback()
    return found


INDEXES = sa_text("""
SELECT i.relname AS name, am.amname AS method,
       array(SELECT CASE WHEN oc.opcdefault THEN NULL ELSE oc.opcname END
               FROM unnest(x.indclass::oid[]) WITH ORDINALITY AS u(oid, n)
               JOIN pg_opclass oc ON oc.oid = u.oid ORDER BY u.n) AS opclasses
  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am am ON am.oid = i.relam
 WHERE x.indrelid = to_regclass(:table)
""")
CHECKS = sa_text("""
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid = to_regclass(:table) AND contype = 'c'
""")


def _beyond_autogenerate(conn: Connection) -> list[tuple[Any, ...]]:
    """Differences in what Alembic's comparison leaves out (run inside a rolled-back transaction)."""
    found: list[tuple[Any, ...]] = []
    inspector = sa_inspect(conn)
    present = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in present:
            continue  # compare_metadata reports it
        pkey = inspector.get_pk_constraint(table.name)["constrained_columns"]
        wanted_pkey = [column.name for column in table.primary_key.columns]
        if pkey != wanted_pkey:
            found.append(("modify_primary_key", table.name, wanted_pkey, pkey))
        partition = conn.scalar(
            sa_text("SELECT pg_get_partkeydef(to_regclass(:t))"), {"t": table.name}
        )
        wanted_partition = table.dialect_options["postgresql"]["partition_by"]
        if partition != wanted_partition:
            found.append(("modify_partition_by", table.name, wanted_partition, partition))
        found += _index_differences(conn, table)
        found += _check_differences(conn, table)
    return found


def _index_differences(conn: Connection, table: Table) -> list[tuple[Any, ...]]:
    """Index access methods and operator classes (NULL: the type's default) that differ."""
    found: list[tuple[Any, ...]] = []
    stored = {row.name: row for row in conn.execute(INDEXES, {"table": table.name})}
    for index in table.indexes:
        row = stored.get(index.name or "")
        if row is None:
            continue  # compare_metadata reports it
        options = index.dialect_options["postgresql"]
        method = options["using"] or "btree"
        ops = options["ops"] or {}
        opclasses = [
            ops.get(expr.name) if isinstance(expr, Column) else None for expr in index.expressions
        ]
        if (method, opclasses) != (row.method, list(row.opclasses)):
            found.append(
                ("modify_index", index.name, (method, opclasses), (row.method, row.opclasses))
            )
    return found


def _check_differences(conn: Connection, table: Table) -> list[tuple[Any, ...]]:
    """CHECK constraints that differ, compared as PostgreSQL normalises them.

    The model's constraints are added to a temporary copy of the table's columns, so both sides
    are read back through ``pg_get_constraintdef``.
    """
    checks = [c for c in table.constraints if isinstance(c, CheckConstraint)]
    stored = {name: definition for name, definition in conn.execute(CHECKS, {"table": table.name})}
    wanted: dict[str, str] = {}
    if checks:
        copy = Table(
            f"schema_compare_{table.name}",
            MetaData(),
            *(Column(column.name, column.type) for column in table.columns),
            *(CheckConstraint(check.sqltext, name=check.name) for check in checks),
            prefixes=["TEMPORARY"],
        )
        copy.create(conn)
        wanted = {
            name: definition for name, definition in conn.execute(CHECKS, {"table": copy.name})
        }
    return [
        ("modify_check", table.name, name, wanted.get(name), stored.get(name))
        for name in sorted(wanted.keys() | stored.keys())
        if wanted.get(name) != stored.get(name)
    ]
