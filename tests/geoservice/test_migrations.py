"""Migrations go down and up again: each revision's downgrade restores the one before."""

from __future__ import annotations

import asyncio
from collections import Counter

import h3
import psycopg
from alembic import command
from psycopg.rows import dict_row

from geoservice.db.connection import connect
from geoservice.db.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    schema_differences,
    upgrade,
)
from geoservice.query.h3sync import sync_cells


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


def test_h3_revision_keeps_the_counts_of_queued_facilities_exact(fresh_db: str) -> None:
    """0011 → 0012: facilities counted in facility_h3 then changed (queued) come out counted
    exactly where they are now, at resolutions 0-10, once synced."""
    command.downgrade(alembic_config(fresh_db), "0011")
    spots = {"a": (22.55, 114.12), "b": (22.56, 114.13), "c": (22.57, 114.14)}
    with connect(fresh_db) as conn:
        for fid, (lat, lon) in spots.items():
            conn.execute(
                "INSERT INTO facilities (id, layer, name, source, source_id, geom, h3_15,"
                " content_hash) VALUES (%(id)s, 'toilet', %(id)s, 't', %(id)s,"
                " ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326), 0, 'x')",
                {"id": fid, "lat": lat, "lon": lon},
            )
        # counted as 0011's sync counted them: every resolution's cell, in facility_h3 too
        for fid, (lat, lon) in spots.items():
            cells = [h3.str_to_int(h3.latlng_to_cell(lat, lon, r)) for r in range(16)]
            conn.execute("INSERT INTO facility_h3 VALUES (%s, 'toilet', true, %s)", (fid, cells))
            for r, cell in enumerate(cells):
                conn.execute(
                    "INSERT INTO h3_counts VALUES (%s, 'toilet', %s, 1)"
                    " ON CONFLICT (resolution, layer, cell)"
                    " DO UPDATE SET count = h3_counts.count + 1",
                    (r, cell),
                )
        conn.execute("DELETE FROM h3_pending")
        # then one moves, one is removed: both queued
        conn.execute(
            "UPDATE facilities SET geom = ST_SetSRID(ST_MakePoint(114.2, 22.6), 4326)"
            " WHERE id = 'a'"
        )
        conn.execute("UPDATE facilities SET status = 'removed' WHERE id = 'b'")
    upgrade(fresh_db)

    async def sync() -> None:
        conn = await psycopg.AsyncConnection.connect(
            fresh_db, row_factory=dict_row, autocommit=True
        )
        async with conn:
            while await sync_cells(conn):
                pass

    asyncio.run(sync())
    expected = Counter(
        (r, h3.str_to_int(h3.latlng_to_cell(lat, lon, r)))
        for lat, lon in ((22.6, 114.2), spots["c"])
        for r in range(11)
    )
    with connect(fresh_db) as conn:
        rows = conn.execute("SELECT resolution, cell, count FROM h3_counts").fetchall()
    assert {(r["resolution"], r["cell"]): r["count"] for r in rows} == dict(expected)
