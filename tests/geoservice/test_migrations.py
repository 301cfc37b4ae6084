"""Migrations go down and up again: each revision's downgrade restores the one before."""

from __future__ import annotations

from alembic import command

from geoservice.db.connection import connect
from geoservice.db.migrate import alembic_config, current_revision, head_revision, upgrade


def functions(url: str) -> set[str]:
    """Names of the toilet ingestion functions in the database."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT proname FROM pg_proc WHERE proname LIKE 'toilet_ingest%'"
        ).fetchall()
    return {r["proname"] for r in rows}


def test_sensor_copy_revision_goes_down_and_up(fresh_db: str) -> None:
    assert functions(fresh_db) == {"toilet_ingest_begin", "toilet_ingest_end"}
    command.downgrade(alembic_config(fresh_db), "0005")
    assert current_revision(fresh_db) == "0005"
    assert functions(fresh_db) == {"toilet_ingest_many"}
    upgrade(fresh_db)
    assert current_revision(fresh_db) == head_revision()
    assert functions(fresh_db) == {"toilet_ingest_begin", "toilet_ingest_end"}
