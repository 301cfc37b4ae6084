"""The k nearest facilities by geodesic distance on the WGS 84 ellipsoid, exactly.

The spatial index orders candidates by distance on a sphere (geography ``<->``); the ellipsoid
differs from it by less than 0.6 % of the distance anywhere on Earth. So candidates are fetched
by index and re-ranked by their ellipsoidal distance. Near the facilities that is the answer as
soon as the k-th is nearer than anything unfetched can be: every unfetched one lies at sphere
distance ≥ that of the last candidate, hence at ellipsoidal distance ≥ that times
(1 - SPHERE_ERROR).

From far away that bound is useless: 1 % of 10,000 km is the whole district, widening the
fetch by counts read every facility (3.6 s from the district's antipode), and even the index's
own sphere order visits most entries. There the bound is taken from the H3 cells that hold
facilities (``h3_counts``, exact per facility) instead: every facility in cell c lies within
ρ_c (the cell's circumradius on the sphere, ×(1 + SPHERE_ERROR) for the ellipsoid, + 1 m) of
the cell's centre, so by the triangle inequality of the ellipsoidal distance it lies between
d(P, centre_c) - ρ_c and d(P, centre_c) + ρ_c from P (d exact, pyproj's geodesic). The cells
nearest by their far edge that hold k facilities give a distance T within which k lie; only
cells whose near edge is ≤ T can hold one of the k nearest, so the facilities within ρ_c of
those cells' centres, plus those whose cells are still queued (``h3_pending``), are ranked by
exact ellipsoidal distance in one statement, in the snapshot the cells were read in (filters
that leave fewer than k within T widen T). A point goes this way when it is more than FAR_M
from every occupied coarse cell (``Extent``, cached per process: it only picks the path), or
when the near path cannot prove its answer. The cost follows how many facilities lie within a
cell's width of the k-th distance, not the distance.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import h3 as h3lib
import numpy as np
import psycopg
from fastapi import APIRouter, Query, Request, Response
from psycopg import sql
from pyproj import Geod

from geoservice.api.deps import LayersDep, PoolDep, SettingsDep
from geoservice.api.features import (
    FEATURE_COLUMNS,
    GeoJSONResponse,
    feature_collection,
    feature_collection_responses,
    json_response,
    to_feature,
)
from geoservice.settings import Settings
from geoservice.toilets import live
from layers import facility
from layers.hours import open_now

router = APIRouter(tags=["nearest"])

MAX_K = 100
DEFAULT_K = 5
#: farthest radius a client may ask for (metres)
MAX_DISTANCE_M = 1_000_000.0
#: conservative bound of |ellipsoidal - spherical| / spherical distance (true max ≈ 0.56 %)
SPHERE_ERROR = 0.01
#: candidates fetched beyond k on the first try (each costs the index scan a heap visit)
CANDIDATE_MARGIN = 3
#: most candidates one request reads; filters evaluated in Python widen up to this
MAX_CANDIDATES = 20_000
#: statement texts kept composed (filter combinations × candidate counts in use)
MAX_STATEMENTS = 1_000
#: how long the list of distinct opening-hours expressions is reused (seconds)
HOURS_TTL_S = 300.0
#: above this many distinct expressions, open_now is evaluated row by row instead
MAX_HOURS_EXPRESSIONS = 5_000

# (an f-string: the "not removed" condition of layers.facility is filled in now, the doubled
# braces by sql.SQL.format per request)
_SQL = f"""
SELECT c.*, {{live_columns}}
FROM (SELECT {{columns}},
             ST_Distance(f.geom::geography, q.pt, true) AS distance_m,
             f.geom::geography <-> q.pt AS sphere_m
      FROM facilities f,
           (SELECT ST_SetSRID(ST_MakePoint(%(lon)s::float8, %(lat)s::float8), 4326)::geography
                   AS pt) q
      WHERE {facility.live("f")} AND f.layer = ANY(%(layers)s) {{filters}}
      ORDER BY f.geom::geography <-> ST_SetSRID(ST_MakePoint(%(lon)s::float8, %(lat)s::float8),
                                                4326)::geography
      LIMIT {{limit}}) c
{{live_joins}}
"""


_POINT = (
    "(SELECT ST_SetSRID(ST_MakePoint(%(lon)s::float8, %(lat)s::float8), 4326)::geography AS pt)"
)
# the far path: facilities within a disc around the centre of each cell that may hold a
# nearer one, and those whose cells are still queued, ranked by exact ellipsoidal distance
_FAR_SQL = f"""
SELECT c.*, {{live_columns}}
FROM (SELECT DISTINCT ON (distance_m, id) *
      FROM (SELECT {{columns}},
                   ST_Distance(f.geom::geography, q.pt, true) AS distance_m,
                   0.0::float8 AS sphere_m
              FROM unnest(%(cell_lon)s::float8[], %(cell_lat)s::float8[], %(cell_r)s::float8[])
                   AS cell(lon, lat, r)
              JOIN facilities f
                ON ST_DWithin(f.geom::geography,
                              ST_SetSRID(ST_MakePoint(cell.lon, cell.lat), 4326)::geography,
                              cell.r, false),
                   {_POINT} q
             WHERE {facility.live("f")} AND f.layer = ANY(%(layers)s) {{filters}}
            UNION ALL
            SELECT {{columns}},
                   ST_Distance(f.geom::geography, q.pt, true) AS distance_m,
                   0.0::float8 AS sphere_m
              FROM h3_pending p JOIN facilities f ON f.id = p.facility_id, {_POINT} q
             WHERE {facility.live("f")} AND f.layer = ANY(%(layers)s) {{filters}}) near
      ORDER BY distance_m, id
      LIMIT {{limit}}) c
{{live_joins}}
"""
#: occupied cells of one resolution for some layers (at most MAX_CELLS + 1 read)
_CELLS = (
    "SELECT coalesce(array_agg(cell), '{}') AS cells, coalesce(array_agg(n), '{}') AS counts"
    " FROM (SELECT cell, sum(count)::bigint AS n FROM (SELECT cell, count FROM h3_counts"
    "       WHERE resolution = %s AND layer = ANY(%s) AND count > 0 LIMIT %s) c"
    "       GROUP BY cell) g"
)
#: resolutions tried, finest first: the first with at most MAX_CELLS occupied cells is used
FAR_RESOLUTIONS = (8, 6, 4, 2, 0)
MAX_CELLS = 2_000
#: the sphere the index and ST_DWithin(..., false) measure on (PostGIS: the mean radius)
SPHERE_RADIUS_M = 6_371_008.7714
GEOD = Geod(ellps="WGS84")
#: beyond this from every occupied coarse cell a point takes the far path directly (metres)
FAR_M = 50_000.0
EXTENT_RESOLUTION = 4
EXTENT_TTL_S = 60.0
_EXTENT = "SELECT DISTINCT cell FROM h3_counts WHERE resolution = %s AND count > 0 LIMIT %s"

_HOURS = (
    "SELECT DISTINCT opening_hours AS h FROM facilities "
    f"WHERE opening_hours IS NOT NULL AND {facility.live(None)} LIMIT %s"
)


@dataclass
class Filters:
    """What a nearest request asks for besides the point."""

    layers: list[str]
    k: int = DEFAULT_K
    max_distance_m: float | None = None
    open_now: bool = False
    accessible: bool = False
    available: bool = False


@dataclass
class HoursCache:
    """Distinct opening-hours expressions in one database, so closed ones are dropped in SQL."""

    expressions: list[str] = field(default_factory=list)
    loaded_at: float = float("-inf")
    usable: bool = False

    async def closed_now(
        self, conn: psycopg.AsyncConnection[dict[str, Any]], timezone: str, now: datetime
    ) -> list[str] | None:
        """The known expressions closed (or unknown) now; None when the list is unusable."""
        if time.monotonic() - self.loaded_at > HOURS_TTL_S:
            cursor = await conn.execute(_HOURS, (MAX_HOURS_EXPRESSIONS + 1,))
            found = [str(r["h"]) for r in await cursor.fetchall()]
            self.usable = len(found) <= MAX_HOURS_EXPRESSIONS
            self.expressions = found if self.usable else []
            self.loaded_at = time.monotonic()
        if not self.usable:
            return None
        # expressions added since loading are not in the list: they pass SQL and are
        # evaluated row by row below, so the answer stays exact
        return [e for e in self.expressions if open_now(e, timezone, now) is not True]


@dataclass
class Extent:
    """Where the facilities are, coarsely, to tell points far from all of them (per process).

    Only the choice between the two exact paths depends on it, so it may be a little stale.
    """

    centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    loaded_at: float = float("-inf")

    async def is_far(
        self, conn: psycopg.AsyncConnection[dict[str, Any]], lat: float, lon: float
    ) -> bool:
        """Whether the point is more than FAR_M from every occupied coarse cell's centre."""
        if time.monotonic() - self.loaded_at > EXTENT_TTL_S:
            cursor = await conn.execute(_EXTENT, (EXTENT_RESOLUTION, MAX_CELLS + 1))
            cells = [int(r["cell"]) for r in await cursor.fetchall()]
            # too many to check quickly: facilities are everywhere, so no point is far
            self.centres = np.array(
                [_cell_disc(c)[:2] for c in cells] if len(cells) <= MAX_CELLS else [],
                dtype=float,
            ).reshape(-1, 2)
            self.loaded_at = time.monotonic()
        if not len(self.centres):
            return False
        n = len(self.centres)
        _, _, metres = GEOD.inv(
            np.full(n, lon), np.full(n, lat), self.centres[:, 0], self.centres[:, 1]
        )
        return bool(metres.min() > FAR_M)


def _extent(request: Request) -> Extent:
    extent: Extent | None = getattr(request.app.state, "nearest_extent", None)
    if extent is None:
        extent = Extent()
        request.app.state.nearest_extent = extent
    return extent


def _hours_cache(request: Request) -> HoursCache:
    cache: HoursCache | None = getattr(request.app.state, "nearest_hours", None)
    if cache is None:
        cache = HoursCache()
        request.app.state.nearest_hours = cache
    return cache


#: statement texts by (filters in use, candidate count, online window)
_QUERIES: dict[tuple[bool, bool, bool, bool, bool, int, int], str] = {}


def _query(filters: Filters, closed: bool, limit: int, settings: Settings) -> str:
    """The statement text for one combination of filters and candidate count, composed once.

    The count is a literal, not a parameter: with ``LIMIT $n`` PostgreSQL's generic plan
    guesses a tenth of the table and seq-scans, so every execution was planned anew.
    """
    key = (
        filters.max_distance_m is not None, filters.accessible, filters.available,
        filters.open_now, closed, limit, settings.toilets.online_window_s,
    )  # fmt: skip
    text = _QUERIES.get(key)
    if text is None:
        if len(_QUERIES) >= MAX_STATEMENTS:
            _QUERIES.clear()
        text = _QUERIES[key] = _compose(filters, closed, limit, settings).as_string()
    return text


def _compose(
    filters: Filters, closed: bool, limit: int, settings: Settings, template: str = _SQL
) -> sql.Composed:
    conditions: list[sql.Composable] = []
    if filters.max_distance_m is not None:
        # sphere radius widened by the sphere/ellipsoid bound: the exact cut is made below
        conditions.append(sql.SQL("ST_DWithin(f.geom::geography, q.pt, %(within)s, false)"))
    if filters.accessible:
        conditions.append(sql.SQL("f.accessible IS TRUE"))
    if filters.available:
        conditions.append(live.available_filter(settings))
    if filters.open_now:
        # unknown hours never count as open
        conditions.append(sql.SQL("f.opening_hours IS NOT NULL"))
        if closed:
            conditions.append(sql.SQL("f.opening_hours <> ALL(%(closed)s)"))
    extra = sql.SQL("").join(sql.SQL(" AND ") + c for c in conditions)
    return sql.SQL(template).format(
        columns=sql.SQL(FEATURE_COLUMNS),
        filters=extra,
        limit=sql.Literal(limit),
        live_columns=live.columns(settings),
        live_joins=live.joins("c"),
    )


async def nearest_facilities(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    lat: float,
    lon: float,
    filters: Filters,
    settings: Settings,
    *,
    hours: HoursCache | None = None,
    now: datetime | None = None,
    extent: Extent | None = None,
) -> list[dict[str, Any]]:
    """Rows of the k nearest facilities (ellipsoidal ``distance_m`` ascending), exact.

    With an ``extent``, points far from every facility skip the index's sphere order.

    Each row carries its ``live`` status (toilets) and ``rating``, read in the same statement.
    """
    timezone = settings.district.timezone
    moment = now or datetime.now(ZoneInfo(timezone))
    closed: list[str] | None = None
    if filters.open_now:
        closed = await (hours or HoursCache()).closed_now(conn, timezone, moment)
    params: dict[str, Any] = {"lat": lat, "lon": lon, "layers": filters.layers}
    if filters.max_distance_m is not None:
        params["within"] = filters.max_distance_m * (1 + SPHERE_ERROR) + 1.0
    if closed:
        params["closed"] = closed
    if extent is not None and await extent.is_far(conn, lat, lon):
        # far from every facility: the index's sphere order would read them all (docstring)
        return await _far(conn, lat, lon, filters, params, math.inf, closed, settings, moment)
    # a few beyond k: the k-th is then almost always proven nearer than anything unfetched
    limit = filters.k + CANDIDATE_MARGIN
    while True:
        query = _query(filters, bool(closed), limit, settings)
        cursor = await conn.execute(query, params, prepare=True)
        rows = await cursor.fetchall()
        accepted = [r for r in rows if _passes(r, filters, timezone, moment)]
        accepted.sort(key=lambda r: (r["distance_m"], r["id"]))
        exhausted = len(rows) < limit
        if exhausted or limit >= MAX_CANDIDATES:
            return _taken(accepted[: filters.k])
        # no facility beyond the fetched ones is nearer than this (ellipsoidal metres)
        unseen_floor = max(float(r["sphere_m"]) for r in rows) * (1 - SPHERE_ERROR)
        if filters.max_distance_m is not None and unseen_floor > filters.max_distance_m:
            return _taken(accepted[: filters.k])
        if len(accepted) >= filters.k:
            kth = float(accepted[filters.k - 1]["distance_m"])
            if kth < unseen_floor:
                return _taken(accepted[: filters.k])
            # far away: bound by cells, not by widening (the module docstring)
            if filters.max_distance_m is not None:
                kth = min(kth, filters.max_distance_m)
            return await _far(conn, lat, lon, filters, params, kth, closed, settings, moment)
        limit = min(limit * 4, MAX_CANDIDATES)


@lru_cache(maxsize=200_000)
def _cell_disc(cell: int) -> tuple[float, float, float]:
    """(lon, lat, radius in metres) of a disc on the ellipsoid holding every point of the cell.

    H3 cells are convex polygons on the sphere (great-circle edges in lat/lon taken as
    spherical): the vertex farthest from the centre bounds every point's sphere distance, and
    the ellipsoidal distance is within SPHERE_ERROR of it (plus a metre for rounding).
    """
    lat, lon = h3lib.api.basic_int.cell_to_latlng(cell)
    boundary = h3lib.api.basic_int.cell_to_boundary(cell)
    phi = np.radians(lat)
    vertex_phi = np.radians([v[0] for v in boundary])
    dlon = np.radians([v[1] for v in boundary]) - np.radians(lon)
    # haversine on the sphere (numerically safe for small distances)
    a = (
        np.sin((vertex_phi - phi) / 2) ** 2
        + np.cos(phi) * np.cos(vertex_phi) * np.sin(dlon / 2) ** 2
    )
    sphere_m = 2 * SPHERE_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return lon, lat, float(sphere_m.max()) * (1 + SPHERE_ERROR) + 1.0


@lru_cache(maxsize=64)
def _discs(cells: tuple[int, ...]) -> np.ndarray:
    """``_cell_disc`` of each cell as rows (lon, lat, radius); the same cells come again."""
    return np.array([_cell_disc(c) for c in cells], dtype=float).reshape(-1, 3)


async def _occupied_cells(
    conn: psycopg.AsyncConnection[dict[str, Any]], layer_keys: list[str]
) -> tuple[list[int], np.ndarray]:
    """Cells holding live facilities of these layers and how many, at the finest resolution
    with at most MAX_CELLS of them."""
    cells: list[int] = []
    counts: list[int] = []
    # one row of two arrays: a row per cell cost more in Python than the query
    for resolution in FAR_RESOLUTIONS:
        cursor = await conn.execute(_CELLS, (resolution, layer_keys, MAX_CELLS + 1))
        row = await cursor.fetchone()
        cells, counts = (list(row["cells"]), list(row["counts"])) if row else ([], [])
        if len(cells) <= MAX_CELLS:
            break
    return [int(c) for c in cells], np.array(counts, dtype=np.int64)


async def _far(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    lat: float,
    lon: float,
    filters: Filters,
    params: dict[str, Any],
    kth: float,
    closed: list[str] | None,
    settings: Settings,
    moment: datetime,
) -> list[dict[str, Any]]:
    """The k nearest when the sphere's bound is too loose: by cell bounds (module docstring).

    ``kth`` is an ellipsoidal distance within which k facilities are known to lie (or inf).
    """
    timezone = settings.district.timezone
    # the cells and the facilities in one snapshot: a facility whose cell is counted after the
    # cells were read would otherwise be neither in them nor still queued
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cells, counts = await _occupied_cells(conn, filters.layers)
        discs = _discs(tuple(cells))
        nearest_m = np.zeros(0)
        if len(discs):
            _, _, to_centre = GEOD.inv(
                np.full(len(discs), lon), np.full(len(discs), lat), discs[:, 0], discs[:, 1]
            )
            # no facility of a cell is nearer than its centre's distance less the radius
            nearest_m = to_centre - discs[:, 2] - 1.0
            order = np.argsort(to_centre + discs[:, 2])
            # every facility of the cells nearest by their far edge lies within that edge
            held = np.cumsum(counts[order])
            far_edge = (to_centre + discs[:, 2])[order] + 1.0
            limit_m = math.inf if filters.max_distance_m is None else filters.max_distance_m
            cap = min(kth, limit_m)
            wanted = filters.k
            while True:
                enough = np.flatnonzero(held >= wanted)
                threshold = float(far_edge[enough[0]]) if len(enough) else math.inf
                final = threshold >= cap
                threshold = min(threshold, cap)
                found = await _within(conn, filters, params, discs, nearest_m, threshold, closed,
                                      settings, timezone, moment)  # fmt: skip
                if len(found) >= filters.k:
                    return _taken(found[: filters.k])
                if final:
                    if cap >= limit_m:
                        return _taken(found)
                    cap = limit_m  # the k candidates changed since they were read: look on
                # filters left fewer than k this near: look further
                wanted *= 4
        # no cells counted (all queued): every facility is a candidate
        found = await _within(conn, filters, params, discs, nearest_m, math.inf, closed,
                              settings, timezone, moment)  # fmt: skip
        return _taken(found[: filters.k])


async def _within(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    filters: Filters,
    params: dict[str, Any],
    discs: np.ndarray,
    nearest_m: np.ndarray,
    threshold: float,
    closed: list[str] | None,
    settings: Settings,
    timezone: str,
    moment: datetime,
) -> list[dict[str, Any]]:
    """The accepted facilities at most `threshold` away, nearest first (at most k + margin)."""
    kept = discs[nearest_m <= threshold] if len(discs) else discs
    far_params = {
        **params,
        "cell_lon": kept[:, 0].tolist(),
        "cell_lat": kept[:, 1].tolist(),
        "cell_r": kept[:, 2].tolist(),
    }
    limit = filters.k + CANDIDATE_MARGIN
    while True:
        query = _far_query(filters, bool(closed), limit, settings)
        rows = await (await conn.execute(query, far_params)).fetchall()
        accepted = [
            r
            for r in rows
            if _passes(r, filters, timezone, moment) and float(r["distance_m"]) <= threshold
        ]
        beyond = rows and float(rows[-1]["distance_m"]) > threshold
        if len(accepted) >= filters.k or len(rows) < limit or beyond:
            return accepted
        limit *= 4


def _far_query(filters: Filters, closed: bool, limit: int, settings: Settings) -> str:
    """The far path's statement text for one combination, composed once like ``_query``'s."""
    key = (
        filters.max_distance_m is not None, filters.accessible, filters.available,
        filters.open_now, closed, limit, settings.toilets.online_window_s,
    )  # fmt: skip
    text = _FAR_QUERIES.get(key)
    if text is None:
        if len(_FAR_QUERIES) >= MAX_STATEMENTS:
            _FAR_QUERIES.clear()
        composed = _compose(filters, closed, limit, settings, template=_FAR_SQL)
        text = _FAR_QUERIES[key] = composed.as_string()
    return text


_FAR_QUERIES: dict[tuple[bool, bool, bool, bool, bool, int, int], str] = {}


def _taken(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        live.take(row)
        row.pop("sphere_m")
    return rows


def _passes(row: dict[str, Any], filters: Filters, timezone: str, now: datetime) -> bool:
    if filters.max_distance_m is not None and row["distance_m"] > filters.max_distance_m:
        return False
    return not filters.open_now or open_now(row["opening_hours"], timezone, now) is True


@router.get(
    "/api/v1/nearest",
    summary="The k nearest facilities by geodesic (WGS 84 ellipsoid) distance",
    response_class=GeoJSONResponse,
    responses=feature_collection_responses(
        {
            "distance_m": {"type": "number", "minimum": 0},
            "layer": {"type": "string"},
            "name": {"type": "string"},
            "status": {"type": "string"},
        }
    ),
)
async def nearest(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    layer_keys: LayersDep,
    lat: Annotated[float, Query(ge=-90, le=90, description="latitude, WGS 84 degrees")],
    lon: Annotated[float, Query(ge=-180, le=180, description="longitude, WGS 84 degrees")],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="how many facilities")] = DEFAULT_K,
    max_distance_m: Annotated[
        float | None, Query(gt=0, le=MAX_DISTANCE_M, description="farthest distance, metres")
    ] = None,
    open_now_: Annotated[
        bool,
        Query(alias="open_now", description="only facilities open now (unknown hours excluded)"),
    ] = False,
    accessible: Annotated[bool, Query(description="only accessible facilities")] = False,
    available: Annotated[
        bool, Query(description="only toilets with a free stall now and an online sensor")
    ] = False,
) -> Response:
    """FeatureCollection of the k nearest, ascending, each with ``distance_m``.

    ``open_now``, ``accessible`` and ``available`` restrict when true; false means no filter.
    Removed facilities never appear; temporarily closed ones carry that ``status``.
    """
    filters = Filters(
        layers=layer_keys,
        k=k,
        max_distance_m=max_distance_m,
        open_now=open_now_,
        accessible=accessible,
        available=available,
    )
    async with pool.connection() as conn:
        rows = await nearest_facilities(
            conn,
            lat,
            lon,
            filters,
            settings,
            hours=_hours_cache(request),
            extent=_extent(request),
        )
    timezone = settings.district.timezone
    features = [to_feature(row, timezone=timezone) for row in rows]
    body = feature_collection(features, numberReturned=len(features))
    return json_response(body, media_type="application/geo+json")
