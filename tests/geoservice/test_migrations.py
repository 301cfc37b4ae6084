"""Migrations go down and up again: each revision's downgrade restores the one before."""

from __future__ import annotations

from alembic import command

from geoservice.db.connection import connect
from geoservice.db.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    schema_differences,
    upgrade,
)


def functions(url: str) -> set[str]:
    """Names of the toilet ingestion functions in the database."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT proname FROM pg_proc WHERE proname LIKE 'toilet_ingest%'"
        ).fetchall()
    return {r["proname"] for r in rows}


def catalogue(url: str) -> set[tuple[str, str]]:
    """Every relation, function and trigger of the public schema not owned by an extension."""
    with connect(url) as conn:
        rows = conn.execute(
            """
            SELECT c.relkind::text AS kind, c.relname AS definition
              FROM pg_class c
             WHERE c.relnamespace = 'public'::regnamespace
               AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                WHERE d.objid = c.oid AND d.deptype = 'e')
            UNION ALL
            SELECT 'function', pg_get_functiondef(p.oid)
              FROM pg_proc p
             WHERE p.pronamespace = 'public'::regnamespace
               AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                WHERE d.objid = p.oid AND d.deptype = 'e')
            UNION ALL
            SELECT 'trigger', pg_get_triggerdef(t.oid)
              FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal
            """
        ).fetchall()
    return {(r["kind"], r["definition"]) for r in rows}


def test_sensor_copy_revision_goes_down_and_up(fresh_db: str) -> None:
    assert functions(fresh_db) == {"toilet_ingest_begin", "toilet_ingest_end"}
    command.downgrade(alembic_config(fresh_db), "0005")
    assert current_revision(fresh_db) == "0005"
    assert functions(fresh_db) == {"toilet_ingest_many"}
    upgrade(fresh_db)
    assert current_revision(fresh_db) == head_revision()
    assert functions(fresh_db) == {"toilet_ingest_begin", "toilet_ingest_end"}


def test_every_revision_goes_down_to_base_and_up_again(fresh_db: str) -> None:
    at_head = catalogue(fresh_db)
    command.downgrade(alembic_config(fresh_db), "base")
    assert current_revision(fresh_db) is None
    left = {(kind, name) for kind, name in catalogue(fresh_db) if kind in ("r", "p", "v")}
    assert left == {("r", "alembic_version")}
    upgrade(fresh_db)
    assert current_revision(fresh_db) == head_revision()
    assert catalogue(fresh_db) == at_head
    assert schema_differences(fresh_db) == []
