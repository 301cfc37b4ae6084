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
from collections import Counter
from typing import Annotated, Any, Literal

import h3 as h3lib
import psycopg
from fastapi import APIRouter, Query, Response
from h3.api.basic_int import latlng_to_cell as latlng_to_cell_int
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

router = APIRouter(tags=["h3"])

#: most hexagons a request may cover (estimated from the bbox area and the cell size)
MAX_HEXAGONS = 50_000
RESOLUTIONS = range(16)
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

_APPLY_COUNTS = """
INSERT INTO h3_counts AS c (resolution, layer, cell, count)
SELECT * FROM unnest(%s::smallint[], %s::text[], %s::bigint[], %s::integer[])
ON CONFLICT (resolution, layer, cell) DO UPDATE SET count = c.count + EXCLUDED.count
"""


def facility_cells(lat: float, lon: float) -> list[int]:
    """The facility's cell at every resolution 0-15 (index = resolution), as h3 computes it."""
    # h3's integer API: the same cells without building and parsing 16 hex strings (2x faster)
    return [latlng_to_cell_int(lat, lon, r) for r in RESOLUTIONS]


def _plan(rows: list[dict[str, Any]]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(facility_h3 rows to write, h3_counts deltas) for queued facilities."""
    deltas: Counter[tuple[int, str, int]] = Counter()
    upserts: list[tuple[Any, ...]] = []
    for row in rows:
        if row["old_cells"] is not None and row["old_live"]:
            for r, cell in enumerate(row["old_cells"]):
                deltas[(r, row["old_layer"], cell)] -= 1
        if row["layer"] is None:  # deleted since it was queued
            continue
        cells = facility_cells(row["lat"], row["lon"])
        is_live = row["status"] != "removed"
        upserts.append((row["facility_id"], row["layer"], is_live, cells))
        if is_live:
            for r, cell in enumerate(cells):
                deltas[(r, row["layer"], cell)] += 1
    return upserts, [(*key, n) for key, n in deltas.items() if n != 0]


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
        if upserts:
            async with (
                conn.cursor() as cur,
                cur.copy("COPY facility_h3 (facility_id, layer, live, cells) FROM STDIN") as copy,
            ):
                for item in upserts:
                    await copy.write_row(item)
        if deltas:
            columns = [list(column) for column in zip(*deltas, strict=True)]
            await conn.execute(_APPLY_COUNTS, columns)
            await conn.execute("DELETE FROM h3_counts WHERE count <= 0")
        # a facility changed again since it was read keeps its newer queue entry
        await conn.execute(
            "DELETE FROM h3_pending p USING unnest(%s::text[], %s::bigint[]) AS d(id, changed) "
            "WHERE p.facility_id = d.id AND p.changed = d.changed",
            (ids, [row["changed"] for row in rows]),
        )
        cursor = await conn.execute("SELECT count(*) AS n FROM h3_pending")
        left = await cursor.fetchone()
    return int(left["n"]) if left else 0


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
