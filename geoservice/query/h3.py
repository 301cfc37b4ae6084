"""Facilities bucketed into H3 cells at any resolution 0-15, returned as hexagon polygons.

H3 cells do not nest exactly, so a coarse cell cannot be derived from a facility's
resolution-15 cell (it differs from ``latlng_to_cell`` for ~6 % of points). Counts per
(resolution, layer, cell) of the coarse resolutions 0-10 are kept in ``h3_counts``
(geoservice.query.h3sync: a trigger queues changed facilities), and a count request there
reads the counts of the cells overlapping its bbox, never geometry. Finer resolutions, and the
metrics, are bucketed from the facilities themselves: those in the bbox widened by the size
of a cell (a superset of the cells' facilities), each one's cell computed by h3 and kept when
it is one of the requested cells. The hexagon limit keeps the box small at fine resolutions.
"""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any, Literal

import h3 as h3lib
import numpy as np
import psycopg
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
from geoservice.query.h3sync import sync_cells
from geoservice.toilets import live
from ingest import h3cells
from layers import facility

router = APIRouter(tags=["h3"])

#: most hexagons a request may cover (estimated from the bbox area and the cell size)
MAX_HEXAGONS = 50_000
RESOLUTIONS = range(16)
METRICS = ("count", "avg_rating", "free_stalls")
Metric = Literal["count", "avg_rating", "free_stalls"]
#: the meridian's least radius of curvature, a(1 - e²): a distance over it bounds the angle
_MERIDIAN_MIN_M = 6_335_439.327
#: a bound of any cell's circumradius as a multiple of the resolution's average hexagon edge
#: (H3's cells vary in size by a factor under 2 over the globe; pentagons are smaller)
_CIRCUMRADIUS_FACTOR = 4.0

_COUNTS = """
SELECT cell, sum(count)::bigint AS count
FROM h3_counts
WHERE resolution = %(resolution)s AND layer = ANY(%(layers)s) AND cell = ANY(%(cells)s::bigint[])
GROUP BY cell
"""

# the live facilities of the layers in a box (a superset of those in the requested cells), as
# three arrays in one row: a row per facility cost more to fetch than bucketing them
_IN_BOX = f"""
SELECT coalesce(array_agg(ST_Y(f.geom)), '{{}}') AS lat, coalesce(array_agg(ST_X(f.geom)), '{{}}') AS lon,
       CASE WHEN %(ids)s THEN coalesce(array_agg(f.id), '{{}}') END AS ids
FROM facilities f
WHERE {facility.live("f")} AND f.layer = ANY(%(layers)s)
  AND f.geom && ST_MakeEnvelope(%(min_lon)s, %(min_lat)s, %(max_lon)s, %(max_lat)s, 4326)
"""

# a metric per cell of facilities whose cells were computed from the rows _IN_BOX read
_METRIC = """
SELECT c.cell, count(*) AS count, {aggregate} AS value
FROM unnest(%(ids)s::text[], %(cells)s::bigint[]) AS c(id, cell)
JOIN facilities f ON f.id = c.id {joins}
GROUP BY 1
"""


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


def widened(bbox: tuple[float, float, float, float], resolution: int) -> tuple[float, ...]:
    """The bbox widened by a bound of any cell's circumradius at `resolution`: it holds every
    point of every cell overlapping the bbox (the whole globe's width near a pole or across
    the antimeridian)."""
    min_lon, min_lat, max_lon, max_lat = bbox
    radius_m = _CIRCUMRADIUS_FACTOR * h3lib.average_hexagon_edge_length(resolution, unit="m")
    margin = math.degrees(radius_m / _MERIDIAN_MIN_M)
    south, north = max(min_lat - margin, -90.0), min(max_lat + margin, 90.0)
    # the most longitude a point `margin` away can differ by, at the box's highest latitude
    reach = math.sin(math.radians(margin)) / math.cos(math.radians(max(abs(south), abs(north))))
    if reach >= 1.0:
        return (-180.0, south, 180.0, north)
    spread = math.degrees(math.asin(reach))
    west, east = min_lon - spread, max_lon + spread
    if west < -180.0 or east > 180.0:
        return (-180.0, south, 180.0, north)
    return (west, south, east, north)


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
    if metric == "count" and resolution <= h3cells.FINEST_COUNTED:
        rows = await _counted(conn, resolution, cells, layers)
    else:
        rows = await _bucketed(conn, resolution, bbox, cells, layers, metric)
    rows.sort(key=lambda r: int(r["cell"]))
    features = []
    for row in rows:
        count = int(row["count"])
        raw = row["value"] if metric != "count" else count
        value_out = float(raw) if raw is not None and metric == "avg_rating" else raw
        features.append(hexagon(h3lib.int_to_str(int(row["cell"])), count, value_out))
    return features


async def _counted(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    resolution: int,
    cells: list[int],
    layers: list[str],
) -> list[dict[str, Any]]:
    """Facilities per cell from h3_counts (once queued facilities are counted)."""
    left = await sync_cells(conn)
    if left:
        raise ServiceUnavailable(
            f"H3 cells of {left:,} recently loaded facilities are still being computed; retry",
            headers={"Retry-After": "2"},
        )
    params = {"resolution": resolution, "layers": layers, "cells": cells}
    cursor = await conn.execute(_COUNTS, params, prepare=True)
    return await cursor.fetchall()


async def _bucketed(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    resolution: int,
    bbox: tuple[float, float, float, float],
    cells: list[int],
    layers: list[str],
    metric: str,
) -> list[dict[str, Any]]:
    """Facilities per cell (and the metric) from the facilities around the cells, one snapshot."""
    west, south, east, north = widened(bbox, resolution)
    box = {"min_lon": west, "min_lat": south, "max_lon": east, "max_lat": north}
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        params = {"layers": layers, "ids": metric != "count", **box}
        cursor = await conn.execute(_IN_BOX, params, prepare=True, binary=True)
        found = await cursor.fetchone()
        assert found is not None
        ids, own = await asyncio.to_thread(_in_cells, found, resolution, cells)
        if metric == "count":
            got, counts = np.unique(own, return_counts=True)
            return [{"cell": int(c), "count": int(n)} for c, n in zip(got, counts, strict=True)]
        aggregate, joins = live.h3_metric(metric)
        query = sql.SQL(_METRIC).format(aggregate=aggregate, joins=joins)
        cursor = await conn.execute(query, {"ids": ids, "cells": own.tolist()})
        return await cursor.fetchall()


def _in_cells(
    found: dict[str, Any], resolution: int, cells: list[int]
) -> tuple[list[str], np.ndarray]:
    """(ids, cells) of the facilities (`_IN_BOX`'s row) whose cell at `resolution` is one of
    `cells` (no ids when they were not asked for)."""
    own = h3cells.cells(
        np.array(found["lat"], dtype=np.float64),
        np.array(found["lon"], dtype=np.float64),
        resolution,
    )
    inside = np.isin(own, np.asarray(cells, dtype=np.int64))
    ids = found["ids"]
    kept = [] if ids is None else np.asarray(ids, dtype=object)[inside].tolist()
    return kept, own[inside]


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
    pool: PrimaryPoolDep,  # a GET that writes: it counts queued facilities' cells first
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
