"""Keep ``h3_counts`` (facilities per counted H3 cell) up to date with the facilities.

Statement-level triggers on facilities (migrations 0003, 0012) queue every facility whose
position, layer or removed-ness changed in ``h3_pending``, with what the counts count for it:
its layer and position when it was last counted (``old_layer``/``old_geom``, NULL when it is
not counted: new, or removed). A facility queued again before it is synced keeps the first
of these, so whatever changed in between, ``sync_cells`` takes it out of the cells it was
counted in and counts it in those of where it is now, by h3's own ``latlng_to_cell``.

No FastAPI here: ``servicemap ingest`` syncs through this module without the HTTP stack.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from ingest import h3cells
from ingest.load import counts_table, csv_payload

#: most queued facilities one sync handles (~1 s of h3 work); a request syncs one batch
SYNC_BATCH = 50_000
#: advisory lock key serialising syncs (any constant; "h3" in ASCII)
_SYNC_LOCK = 0x6833

_PENDING = """
SELECT p.facility_id, p.changed, f.layer, f.status, ST_Y(f.geom) AS lat, ST_X(f.geom) AS lon,
       p.old_layer, ST_Y(p.old_geom) AS old_lat, ST_X(p.old_geom) AS old_lon
FROM (SELECT facility_id, changed, old_layer, old_geom FROM h3_pending
      ORDER BY changed LIMIT %s) p
LEFT JOIN facilities f ON f.id = p.facility_id
"""

# a sync's count changes, COPYed (a quarter of a million values went through unnest arrays
# slowly), then added; only the cells they touch can have fallen to 0
_DELTAS = """
CREATE TEMP TABLE IF NOT EXISTS h3_count_deltas (
    resolution smallint NOT NULL, layer text NOT NULL, cell bigint NOT NULL, count integer NOT NULL
) ON COMMIT DROP
"""

_APPLY_COUNTS = """
INSERT INTO h3_counts AS c (resolution, layer, cell, count)
SELECT resolution, layer, cell, count FROM h3_count_deltas
ON CONFLICT (resolution, layer, cell) DO UPDATE SET count = c.count + EXCLUDED.count
"""

_DROP_EMPTY = """
DELETE FROM h3_counts c USING h3_count_deltas d
WHERE c.resolution = d.resolution AND c.layer = d.layer AND c.cell = d.cell AND c.count <= 0
"""

# synced: off the queue, unless changed again since it was read (a newer `changed`)
_DONE = """
DELETE FROM h3_pending p USING unnest(%s::text[], %s::bigint[]) AS d(id, changed)
WHERE p.facility_id = d.id AND p.changed = d.changed
"""

# changed again since it was read: it stays queued, now counted as this sync counted it
_RECOUNTED = """
UPDATE h3_pending p
SET old_layer = d.layer,
    old_geom = CASE WHEN d.layer IS NULL THEN NULL
                    ELSE ST_SetSRID(ST_MakePoint(d.lon, d.lat), 4326) END
FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::float8[], %s::float8[])
     AS d(id, changed, layer, lon, lat)
WHERE p.facility_id = d.id AND p.changed <> d.changed
"""


def _counted(row: dict[str, Any]) -> bool:
    """Whether the queued facility is counted as it is now (it exists and is not removed)."""
    return row["layer"] is not None and row["status"] != "removed"


def plan(rows: list[dict[str, Any]]) -> pa.Table:
    """The h3_counts changes of queued facilities: -1 where counted before, +1 where now."""
    now = [row for row in rows if _counted(row)]
    old = [row for row in rows if row["old_layer"] is not None]
    lat = np.array([r["lat"] for r in now] + [r["old_lat"] for r in old], dtype=np.float64)
    lon = np.array([r["lon"] for r in now] + [r["old_lon"] for r in old], dtype=np.float64)
    layers = np.array([r["layer"] for r in now] + [r["old_layer"] for r in old], dtype=object)
    weights = np.concatenate(
        [np.ones(len(now), dtype=np.int32), np.full(len(old), -1, dtype=np.int32)]
    )
    return counts_table(h3cells.cell_counts(h3cells.counted_cells(lat, lon), layers, weights))


async def pending_count(conn: psycopg.AsyncConnection[dict[str, Any]]) -> int:
    """How many changed facilities wait for their H3 cells to be counted."""
    cursor = await conn.execute("SELECT count(*) AS n FROM h3_pending")
    row = await cursor.fetchone()
    return int(row["n"]) if row else 0


async def sync_cells(conn: psycopg.AsyncConnection[dict[str, Any]], batch: int = SYNC_BATCH) -> int:
    """Bring ``h3_counts`` up to date for one batch of queued facilities.

    Returns how many facilities are still queued. Loaders may call it after a large load;
    the H3 endpoint syncs one batch per request of a counted resolution.
    """
    cursor = await conn.execute("SELECT EXISTS (SELECT 1 FROM h3_pending) AS pending")
    found = await cursor.fetchone()
    if found is None or not found["pending"]:
        return 0
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SYNC_LOCK,))
        cursor = await conn.execute(_PENDING, (batch,))
        rows = await cursor.fetchall()
        # h3 work off the event loop: other requests keep being served meanwhile
        deltas = await asyncio.to_thread(plan, rows)
        if deltas.num_rows:
            await conn.execute(_DELTAS)
            await _copy(conn, "h3_count_deltas", deltas)
            await conn.execute(_APPLY_COUNTS)
            await conn.execute(_DROP_EMPTY)
            await conn.execute("DROP TABLE h3_count_deltas")
        ids = [row["facility_id"] for row in rows]
        changed = [row["changed"] for row in rows]
        await conn.execute(_DONE, (ids, changed))
        # what this sync counted each one as (NULL: not counted)
        now = [(r["layer"], r["lon"], r["lat"]) if _counted(r) else (None,) * 3 for r in rows]
        layers, lons, lats = ([n[i] for n in now] for i in range(3))
        await conn.execute(_RECOUNTED, (ids, changed, layers, lons, lats))
        cursor = await conn.execute("SELECT count(*) AS n FROM h3_pending")
        left = await cursor.fetchone()
    return int(left["n"]) if left else 0


async def _copy(conn: psycopg.AsyncConnection[dict[str, Any]], table: str, rows: pa.Table) -> None:
    """COPY an Arrow table's rows into `table` (its columns by name)."""
    query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in rows.column_names)
    )
    async with conn.cursor() as cur, cur.copy(query) as copy:
        await copy.write(memoryview(csv_payload(rows)))
