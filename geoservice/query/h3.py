"""Facilities bucketed into H3 cells at any resolution 0-15, returned as hexagon polygons.

H3 cells do not nest exactly, so a coarse cell cannot be derived from a facility's
resolution-15 cell (it differs from ``latlng_to_cell`` for ~6 % of points). Instead each
facility's 16 cells are computed by h3 itself when it changes (``sync_cells``: a trigger
queues changed facilities in ``h3_pending``) and counts per (resolution, layer, cell) are kept
in ``h3_counts``; a request reads the counts of the cells overlapping its bbox, never geometry.
"""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any, Literal

import h3 as h3lib
import numpy as np
import psycopg
import pyarrow as pa
from fastapi import APIRouter, Query, Response
from psycopg import sql

from geoservice.api.deps import BBoxDep, LayersDep, PrimaryPoolDep, SettingsDep
from geoservice.api.errors import InvalidParameter, ServiceUnavailable
from geoservice.api.features import (
    GeoJSONResponse,
    feature_collection,
    feature_collection_responses,
    json_response,
)
from geoservice.toilets import live
from ingest import h3cells
from ingest.load import cell_counts, csv_payload, h3_rows

router = APIRouter(tags=["h3"])

#: most hexagons a request may cover (estimated from the bbox area and the cell size)
MAX_HEXAGONS = 50_000
RESOLUTIONS = h3cells.RESOLUTIONS
METRICS = ("count", "avg_rating", "free_stalls")
Metric = Literal["count", "avg_rating", "free_stalls"]
#: most queued facilities one sync handles (~1 s of h3 work); a request syncs one batch
SYNC_BATCH = 50_000
#: advisory lock key serialising syncs (any constant; "h3" in ASCII)
_SYNC_LOCK = 0x6833

_COUNTS = """
SELECT cell, sum(count)::bigint AS count
FROM h3_counts
WHERE resolution = %(resolution)s AND layer = ANY(%(layers)s) AND cell = ANY(%(cells)s::bigint[])
GROUP BY cell
"""

_METRIC = """
SELECT h.cells[%(index)s] AS cell, count(*) AS count, {aggregate} AS value
FROM facility_h3 h JOIN facilities f ON f.id = h.facility_id {joins}
WHERE h.live AND h.layer = ANY(%(layers)s) AND h.cells[%(index)s] = ANY(%(cells)s::bigint[])
GROUP BY 1
"""

_PENDING = """
SELECT p.facility_id, p.changed, f.layer, f.status, ST_Y(f.geom) AS lat, ST_X(f.geom) AS lon,
       h.layer AS old_layer, h.live AS old_live, h.cells AS old_cells
FROM (SELECT facility_id, changed FROM h3_pending ORDER BY changed LIMIT %s) p
LEFT JOIN facilities f ON f.id = p.facility_id
LEFT JOIN facility_h3 h ON h.facility_id = p.facility_id
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


def facility_cells(lat: float, lon: float) -> list[int]:
    """The facility's cell at every resolution 0-15 (index = resolution), as h3 computes it."""
    return [int(c) for c in h3cells.all_cells(np.array([lat]), np.array([lon]))[0]]


def _plan(rows: list[dict[str, Any]]) -> tuple[pa.Table, pa.Table]:
    """(facility_h3 rows to write, h3_counts changes) for queued facilities, column-wise."""
    current = [row for row in rows if row["layer"] is not None]  # else deleted since queued
    lat = np.array([row["lat"] for row in current], dtype=np.float64)
    lon = np.array([row["lon"] for row in current], dtype=np.float64)
    cells = h3cells.all_cells(lat, lon)
    layers = np.array([row["layer"] for row in current], dtype=object)
    is_live = np.array([row["status"] != "removed" for row in current], dtype=bool)
    upserts = h3_rows([row["facility_id"] for row in current], layers, is_live, cells)
    # what the facilities counted for before (-1 each) and count for now (+1 each)
    old = [row for row in rows if row["old_cells"] is not None and row["old_live"]]
    old_cells = np.array([row["old_cells"] for row in old], dtype=np.int64).reshape(
        len(old), len(RESOLUTIONS)
    )
    deltas = cell_counts(
        np.concatenate([old_cells, cells]),
        np.concatenate([np.array([row["old_layer"] for row in old], dtype=object), layers]),
        np.concatenate([np.full(len(old), -1, dtype=np.int32), is_live.astype(np.int32)]),
    )
    return upserts, deltas


async def pending_count(conn: psycopg.AsyncConnection[dict[str, Any]]) -> int:
    """How many changed facilities wait for their H3 cells."""
    cursor = await conn.execute("SELECT count(*) AS n FROM h3_pending")
    row = await cursor.fetchone()
    return int(row["n"]) if row else 0


async def sync_cells(conn: psycopg.AsyncConnection[dict[str, Any]], batch: int = SYNC_BATCH) -> int:
    """Bring ``facility_h3``/``h3_counts`` up to date for one batch of queued facilities.

    Returns how many facilities are still queued. Loaders may call it after a large load;
    the H3 endpoint syncs one batch per request.
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
        upserts, deltas = await asyncio.to_thread(_plan, rows)
        ids = [row["facility_id"] for row in rows]
        await conn.execute("DELETE FROM facility_h3 WHERE facility_id = ANY(%s)", (ids,))
        if upserts.num_rows:
            await _copy(conn, "facility_h3", upserts)
        if deltas.num_rows:
            await conn.execute(_DELTAS)
            await _copy(conn, "h3_count_deltas", deltas)
            await conn.execute(_APPLY_COUNTS)
            await conn.execute(_DROP_EMPTY)
            await conn.execute("DROP TABLE h3_count_deltas")
        # a facility changed again since it was read keeps its newer queue entry
        await conn.execute(
            "DELETE FROM h3_pending p USING unnest(%s::text[], %s::bigint[]) AS d(id, changed) "
            "WHERE p.facility_id = d.id AND p.changed = d.changed",
            (ids, [row["changed"] for row in rows]),
        )
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


def bbox_area_km2(bbox: tuple[float, float, float, float]) -> float:
    """Area of a lon/lat box on the sphere, km² (exact enough to bound a hexagon count)."""
    min_lon, min_lat, max_lon, max_lat = bbox
    radius_km = 6371.0088
    return (
        radius_km**2
        * math.radians(max_lon - min_lon)
        * abs(math.sin(math.radians(max_lat)) - math.sin(math.radians(min_lat)))
    )


def estimated_hexagons(bbox: tuple[float, float, float, float], resolution: int) -> float:
    """About how many cells of this resolution cover the bbox."""
    return bbox_area_km2(bbox) / float(h3lib.average_hexagon_area(resolution, unit="km^2"))


def check_resolution(bbox: tuple[float, float, float, float], resolution: int) -> None:
    """InvalidParameter naming `resolution` when the bbox would hold too many hexagons."""
    if estimated_hexagons(bbox, resolution) <= MAX_HEXAGONS:
        return
    finest = max(
        (r for r in range(16) if estimated_hexagons(bbox, r) <= MAX_HEXAGONS), default=None
    )
    allowed = f"use resolution ≤ {finest}" if finest is not None else "use a smaller bbox"
    raise InvalidParameter(
        f"resolution {resolution} would cover about {estimated_hexagons(bbox, resolution):,.0f}"
        f" hexagons over this bbox (at most {MAX_HEXAGONS:,}); {allowed} or a smaller bbox"
    )


def hexagon(cell: str, count: int, value: Any) -> dict[str, Any]:
    """One H3 cell as a GeoJSON Polygon Feature."""
    ring = [[lng, lat] for lat, lng in h3lib.cell_to_boundary(cell)]
    ring.append(ring[0])
    return {
        "type": "Feature",
        "id": cell,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"h3": cell, "value": value, "count": count},
    }


def cells_over(bbox: tuple[float, float, float, float], resolution: int) -> list[int]:
    """Cells of this resolution overlapping the bbox (as int64)."""
    min_lon, min_lat, max_lon, max_lat = bbox
    if min_lon == max_lon or min_lat == max_lat:
        # a degenerate box (a line or a point) still touches the cells it lies in
        corners = {(min_lat, min_lon), (max_lat, max_lon)}
        return sorted(
            {h3lib.str_to_int(h3lib.latlng_to_cell(a, o, resolution)) for a, o in corners}
        )
    polygon = h3lib.LatLngPoly(
        [(min_lat, min_lon), (min_lat, max_lon), (max_lat, max_lon), (max_lat, min_lon)]
    )
    cells = h3lib.h3shape_to_cells_experimental(polygon, resolution, contain="overlap")
    return sorted(h3lib.str_to_int(c) for c in cells)


async def h3_buckets(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    resolution: int,
    bbox: tuple[float, float, float, float],
    layers: list[str],
    metric: str = "count",
) -> list[dict[str, Any]]:
    """Hexagon features for the cells overlapping `bbox`, each counting all its facilities."""
    cells = cells_over(bbox, resolution)
    if len(cells) > MAX_HEXAGONS:
        raise InvalidParameter(
            f"resolution {resolution} covers {len(cells):,} hexagons over this bbox "
            f"(at most {MAX_HEXAGONS:,}); use a coarser resolution or a smaller bbox"
        )
    left = await sync_cells(conn)
    if left:
        raise ServiceUnavailable(
            f"H3 cells of {left:,} recently loaded facilities are still being computed; retry",
            headers={"Retry-After": "2"},
        )
    params: dict[str, Any] = {
        "resolution": resolution,
        "index": resolution + 1,
        "layers": layers,
        "cells": cells,
    }
    if metric == "count":
        query: sql.SQL | sql.Composed = sql.SQL(_COUNTS)
    else:
        aggregate, joins = live.h3_metric(metric)
        query = sql.SQL(_METRIC).format(aggregate=aggregate, joins=joins)
    cursor = await conn.execute(query, params, prepare=True)
    rows = await cursor.fetchall()
    rows.sort(key=lambda r: int(r["cell"]))
    features = []
    for row in rows:
        count = int(row["count"])
        raw = row["value"] if metric != "count" else count
        value_out = float(raw) if raw is not None and metric == "avg_rating" else raw
        features.append(hexagon(h3lib.int_to_str(int(row["cell"])), count, value_out))
    return features


@router.get(
    "/api/v1/h3",
    summary="Facilities per H3 cell as hexagon polygons",
    response_class=GeoJSONResponse,
    responses=feature_collection_responses(
        {
            "h3": {"type": "string"},
            "count": {"type": "integer", "minimum": 0},
            "value": {"type": ["number", "null"]},
        }
    ),
)
async def h3_cells(
    pool: PrimaryPoolDep,  # a GET that writes: it computes queued facilities' cells first
    settings: SettingsDep,
    bbox: BBoxDep,
    layer_keys: LayersDep,
    resolution: Annotated[int, Query(ge=0, le=15, description="H3 resolution 0-15")],
    metric: Annotated[
        Metric, Query(description="count, avg_rating (toilets) or free_stalls (toilets)")
    ] = "count",
) -> Response:
    """FeatureCollection of hexagons with ``h3``, ``value`` and ``count``.

    The hexagons overlapping `bbox` (default: the district's bbox) that hold live
    facilities, each counting all of its facilities; a facility's cell is
    ``h3.latlng_to_cell(lat, lon, resolution)``.
    """
    area = bbox or settings.district.bbox
    check_resolution(area, resolution)
    async with pool.connection() as conn:
        features = await h3_buckets(conn, resolution, area, layer_keys, metric)
    body = feature_collection(
        features, resolution=resolution, metric=metric, numberReturned=len(features)
    )
    return json_response(body, media_type="application/geo+json")
