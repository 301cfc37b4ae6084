"""The k nearest facilities by geodesic distance on the WGS 84 ellipsoid, exactly.

The spatial index orders candidates by their distance in the lon/lat plane (geometry ``<->``,
the same GiST index that serves boxes and tiles); candidates are fetched in that order and
ranked by their ellipsoidal distance. Near the facilities that is the answer as soon as the
k-th is nearer than anything unfetched can be: a geodesic of length s < S from P stays within
S / M of P's latitude (M ≥ a(1 - e²), the meridian's least radius of curvature), so below
φr = |φ| + S / M, where a parallel's radius is at least a cos φr; it changes longitude by at
most S / (a cos φr), so when that stays clear of the antimeridian the stored coordinates differ
by what the path travelled, and s ≥ min(M, a cos φr) · √(Δφ² + Δλ²) (``_unfetched_beyond``).
Every unfetched facility is at least as far in the plane as the last candidate, so at least
that far, scaled, on the ellipsoid. (Near a pole or the antimeridian the bound gives nothing
and the far path below answers.)

From far away the plane's order is useless: widening the fetch by counts read every facility
(3.6 s from the district's antipode), and even the index's own order visits most entries. There
the bound is taken from the H3 cells that hold facilities (``h3_counts``, exact per facility)
instead: every facility in cell c lies within ρ_c (the cell's circumradius on the sphere, ×(1 +
SPHERE_ERROR) for the ellipsoid, + 1 m) of the cell's centre, so by the triangle inequality of
the ellipsoidal distance it lies between d(P, centre_c) - ρ_c and d(P, centre_c) + ρ_c from P
(d exact, pyproj's geodesic). The cells nearest by their far edge that hold k facilities give a
distance T within which k lie; only cells whose near edge is ≤ T can hold one of the k nearest.
Coarse to fine: while those cells hold many facilities, the finer cells meeting their discs
(``_cover``, provably all of them) are read with their counts, giving a nearer T and smaller
discs, down to a few facilities. The facilities in lon/lat boxes around the last discs, plus
those whose cells are still queued (``h3_pending``), are ranked by exact ellipsoidal distance
(filters that leave fewer than k within T widen T). A point goes this way when it is more than
FAR_M from every occupied coarse cell (``Extent``, cached per process: it only picks the path),
or when the near path cannot prove its answer (from afar, near a pole or the antimeridian, or
when filters evaluated in Python leave fewer than k among MAX_CANDIDATES). The cost follows how
many facilities lie near the k-th distance, not the distance.

Counts are read in the snapshot the facilities are read in. A process keeps the counts it read
(``CellCache``): once nothing is queued, h3_counts is a function of the facilities, and
``facilities_version`` (migration 0009) changes in the transaction of any facility change
(bulk loads included: they write the counts in the same transaction), so each statement
returns the version and whether anything is queued, and a snapshot where they differ from the
kept counts' is searched again from counts read in one repeatable-read transaction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, TypeVar
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
from ingest import h3cells
from layers import facility
from layers.hours import open_now

router = APIRouter(tags=["nearest"])
_T = TypeVar("_T")

MAX_K = 100
DEFAULT_K = 5
#: farthest radius a client may ask for (metres)
MAX_DISTANCE_M = 1_000_000.0
#: conservative bound of |ellipsoidal - spherical| / spherical distance (true max ≈ 0.56 %):
#: an H3 cell's disc (a cap on the sphere) widened by it holds the cell on the ellipsoid
SPHERE_ERROR = 0.01
#: candidates fetched beyond k on the first try (each costs the index scan a heap visit)
CANDIDATE_MARGIN = 3
#: a k-th up to FAR_M away is proven by widening (4x the candidates) when the plane's bound
#: needs at most this many times the reach fetched (a disc of 4x the area); otherwise, and
#: farther, the far path's cells bound it
WIDEN_REACH = 2.0
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
             f.geom <-> q.g AS planar_deg
      FROM facilities f,
           (SELECT g, g::geography AS pt
              FROM ST_SetSRID(ST_MakePoint(%(lon)s::float8, %(lat)s::float8), 4326) AS g) q
      WHERE {facility.live("f")} AND f.layer = ANY(%(layers)s) {{filters}}
      ORDER BY f.geom <-> ST_SetSRID(ST_MakePoint(%(lon)s::float8, %(lat)s::float8), 4326)
      LIMIT {{limit}}) c
{{live_joins}}
"""


_POINT = (
    "(SELECT ST_SetSRID(ST_MakePoint(%(lon)s::float8, %(lat)s::float8), 4326)::geography AS pt)"
)
# the far path: facilities in boxes around the discs of the cells that may hold one of the k
# nearest, and those whose cells are still queued, with what tells the snapshot's state (the
# kept counts hold while it is the same); those within the threshold ranked by ellipsoidal
# distance, the nearest `limit` with their full columns and live status (ALL when a filter is
# evaluated in Python). The planar index and no distance in the join: the geography discs'
# estimate (~50 rows, an expensive distance each) crossed jit_above_cost, and compiling cost
# 20-850 ms for a few rows.
_FAR_SQL = f"""
SELECT s.version AS snapshot_version, s.pending AS snapshot_pending, c.*, {{live_columns}}
FROM (SELECT (SELECT n FROM facilities_version) AS version,
             EXISTS (SELECT 1 FROM h3_pending) AS pending) s
LEFT JOIN (SELECT *
           FROM (SELECT DISTINCT ON (id) *
                 FROM (SELECT {{columns}}, ST_Distance(f.geom::geography, q.pt, true) AS distance_m
                         FROM unnest(%(x0)s::float8[], %(y0)s::float8[], %(x1)s::float8[],
                                     %(y1)s::float8[]) AS b(x0, y0, x1, y1)
                         JOIN facilities f
                           ON f.geom && ST_MakeEnvelope(b.x0, b.y0, b.x1, b.y1, 4326),
                              {_POINT} q
                        WHERE {facility.live("f")} AND f.layer = ANY(%(layers)s) {{filters}}
                       UNION ALL
                       SELECT {{columns}}, ST_Distance(f.geom::geography, q.pt, true) AS distance_m
                         FROM h3_pending p JOIN facilities f ON f.id = p.facility_id, {_POINT} q
                        WHERE {facility.live("f")} AND f.layer = ANY(%(layers)s) {{filters}}) u
                 ORDER BY id) d
           WHERE distance_m <= %(threshold)s
           ORDER BY distance_m, id
           LIMIT {{limit}}) c ON true
{{live_joins}}
"""
#: occupied cells of one resolution for some layers (at most (MAX_CELLS + 1) × layers rows read)
_STATE_COLUMNS = (
    "(SELECT n FROM facilities_version) AS version, EXISTS (SELECT 1 FROM h3_pending) AS pending"
)
_CELLS = (
    "SELECT coalesce(array_agg(cell), '{}') AS cells, coalesce(array_agg(n), '{}') AS counts, "
    + _STATE_COLUMNS
    + " FROM (SELECT cell, sum(count)::bigint AS n FROM (SELECT cell, count FROM h3_counts"
    "       WHERE resolution = %s AND layer = ANY(%s) AND count > 0 LIMIT %s) c"
    "       GROUP BY cell) g"
)
#: resolutions tried, finest first: the first with at most MAX_CELLS occupied cells is used
FAR_RESOLUTIONS = (8, 6, 4, 2, 0)
MAX_CELLS = 2_000
#: occupied cells of one resolution among given ones (the finer level's cover)
_FINER = (
    "SELECT coalesce(array_agg(cell), '{}') AS cells, coalesce(array_agg(n), '{}') AS counts, "
    + _STATE_COLUMNS
    + " FROM (SELECT cell, sum(count)::bigint AS n FROM h3_counts"
    "       WHERE resolution = %s AND layer = ANY(%s) AND cell = ANY(%s::bigint[]) AND count > 0"
    "       GROUP BY cell) g"
)
#: resolutions a refinement step goes down (a cell's disc is met by ~20-40 cells one finer)
FINE_STEP = 1
#: boxes one statement may hold outside the snapshot path: each adds ~400 to the planner's
#: estimate, and past jit_above_cost (100,000) PostgreSQL would compile it
JIT_SAFE_BOXES = 150
#: refinement stops once the cells that may hold one of the k nearest hold at most this many
FINE_FACILITIES = 32
#: the sphere the index and ST_DWithin(..., false) measure on (PostGIS: the mean radius)
SPHERE_RADIUS_M = 6_371_008.7714
GEOD = Geod(ellps="WGS84")
#: WGS 84's equatorial radius and its meridian's least radius of curvature, a(1 - e²) (metres)
EQUATOR_M = 6_378_137.0
MERIDIAN_MIN_M = 6_335_439.327
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


#: the far path's snapshot: one repeatable-read view of facilities and the H3 counts, without
#: JIT (the disc join's estimate, ~50 rows a disc, crossed jit_optimize_above_cost and compiling
#: took ~850 ms for a statement that runs in a few); what tells whether kept counts still hold
_SNAPSHOT = (
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET LOCAL jit = off;"
    " SELECT (SELECT n FROM facilities_version) AS version,"
    " EXISTS (SELECT 1 FROM h3_pending) AS pending"
)
#: most finer cells' counts kept per process before starting afresh
MAX_KEPT_CELLS = 200_000


@dataclass
class _Counts:
    """Counts of H3 cells as read in snapshots with one facilities version and nothing queued."""

    version: int | None
    #: per layer set: (resolution, cells, counts, discs) of the coarse level
    coarse: dict[tuple[str, ...], tuple[int, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )
    #: per (resolution, layer set): cell -> count (0: read and empty)
    finer: dict[tuple[int, tuple[str, ...]], dict[int, int]] = field(default_factory=dict)
    kept: int = 0


@dataclass
class CellCache:
    """The H3 counts the far path read, reused while they cannot have changed (per process).

    Once nothing is queued in h3_pending, h3_counts is a function of the facilities, and
    facilities_version changes in the same transaction as any facility. So a snapshot with the
    version the counts were read at and an empty queue has exactly those counts; any other
    snapshot reads its own (kept only if its queue is empty).
    """

    counts: _Counts = field(default_factory=lambda: _Counts(None))

    def for_snapshot(self, version: int | None, pending: bool) -> _Counts:
        """Counts valid in a snapshot with this facilities version and queue state."""
        if pending or version is None:
            return _Counts(None)  # this request's own
        if self.counts.version != version or self.counts.kept > MAX_KEPT_CELLS:
            self.counts = _Counts(version)
        return self.counts


def _kept(request: Request, name: str, factory: Callable[[], _T]) -> _T:
    """The per-process object `name` kept on the app's state, made on first use."""
    kept: _T | None = getattr(request.app.state, name, None)
    if kept is None:
        kept = factory()
        setattr(request.app.state, name, kept)
    return kept


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
    filters: Filters, closed: bool, limit: int | None, settings: Settings, template: str = _SQL
) -> sql.Composed:
    """The statement for these filters; `limit` rows at most (None: all)."""
    conditions: list[sql.Composable] = []
    if filters.max_distance_m is not None:
        # the box holding the disc (the index's condition), the sphere's radius widened by
        # the sphere/ellipsoid bound; the exact cut is made below
        conditions.append(
            sql.SQL(
                "f.geom && ST_MakeEnvelope(%(bx0)s, %(by0)s, %(bx1)s, %(by1)s, 4326)"
                " AND ST_DWithin(f.geom::geography, q.pt, %(within)s, false)"
            )
        )
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
        limit=sql.SQL("ALL") if limit is None else sql.Literal(limit),
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
    cells: CellCache | None = None,
) -> list[dict[str, Any]]:
    """Rows of the k nearest facilities (ellipsoidal ``distance_m`` ascending), exact.

    With an ``extent``, points far from every facility skip the index's order; with
    ``cells``, the far path reuses H3 counts while they cannot have changed.

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
        params["bx0"], params["by0"], params["bx1"], params["by1"] = disc_box(
            lon, lat, filters.max_distance_m
        )
    if closed:
        params["closed"] = closed
    if extent is not None and await extent.is_far(conn, lat, lon):
        # far from every facility: the index's order would read them all (docstring)
        return await _far(
            conn, lat, lon, filters, params, math.inf, closed, settings, moment, cells
        )
    # a few beyond k: the k-th is then almost always proven nearer than anything unfetched
    limit = filters.k + CANDIDATE_MARGIN
    while True:
        query = _query(filters, bool(closed), limit, settings)
        cursor = await conn.execute(query, params, prepare=True)
        rows = await cursor.fetchall()
        accepted = [r for r in rows if _passes(r, filters, timezone, moment)]
        accepted.sort(key=lambda r: (r["distance_m"], r["id"]))
        if len(rows) < limit:  # every facility passing the SQL filters was fetched
            return _taken(accepted[: filters.k])
        # every unfetched facility is at least this far in the plane
        reached = max(float(r["planar_deg"]) for r in rows)
        if filters.max_distance_m is not None:
            needed = _planar_reach(lat, lon, filters.max_distance_m)
            if needed is not None and needed <= reached:
                return _taken(accepted[: filters.k])
        if len(accepted) >= filters.k:
            kth = float(accepted[filters.k - 1]["distance_m"])
            needed = _planar_reach(lat, lon, kth)
            if needed is not None and needed <= reached:
                return _taken(accepted[: filters.k])
            widen = needed is not None and needed <= WIDEN_REACH * reached and kth <= FAR_M
            if not widen or limit >= MAX_CANDIDATES:
                # far away: bound by cells, not by widening (the module docstring)
                if filters.max_distance_m is not None:
                    kth = min(kth, filters.max_distance_m)
                return await _far(
                    conn, lat, lon, filters, params, kth, closed, settings, moment, cells
                )
        elif limit >= MAX_CANDIDATES:
            # filters evaluated here left fewer than k in this many: the cells bound the rest
            bound = math.inf if filters.max_distance_m is None else filters.max_distance_m
            return await _far(
                conn, lat, lon, filters, params, bound, closed, settings, moment, cells
            )
        limit = min(limit * 4, MAX_CANDIDATES)


def _planar_reach(lat: float, lon: float, metres: float) -> float | None:
    """A distance in the lon/lat plane (degrees) from (lon, lat) beyond which every point lies
    farther than `metres` on the ellipsoid; None when the bound gives none (near a pole or the
    antimeridian).

    By the module docstring's bound, for a distance S just over `metres`: a point nearer than
    S lies nearer than S / min(M, a cos φr) in the plane. Rounding goes the safe way.
    """
    beyond = metres * (1 + 1e-9) + 1e-3
    reach = abs(math.radians(lat)) + beyond / MERIDIAN_MIN_M
    if reach >= math.pi / 2 * (1 - 1e-9):
        return None
    parallel_m = EQUATOR_M * math.cos(reach) * (1 - 1e-9)
    if abs(lon) + math.degrees(beyond / parallel_m) * (1 + 1e-9) >= 180.0:
        return None
    return math.degrees(beyond / min(MERIDIAN_MIN_M, parallel_m)) * (1 + 1e-9)


def disc_boxes(
    lon: np.ndarray, lat: np.ndarray, radius: np.ndarray
) -> tuple[list[float], list[float], list[float], list[float]]:
    """(west, south, east, north) of lon/lat boxes holding discs of these centres and radii.

    A path of length r changes latitude by at most r / M (M ≥ a(1 - e²), the meridian's least
    radius of curvature) and longitude by at most r / (a cos φ) with φ the largest latitude it
    reaches; boxes crossing the antimeridian are split in two.
    """
    dlat = np.degrees(radius / MERIDIAN_MIN_M) * (1 + 1e-9) + 1e-9
    reach = np.minimum(np.abs(lat) + dlat, 90.0)
    with np.errstate(divide="ignore"):
        dlon = np.degrees(radius / (EQUATOR_M * np.cos(np.radians(reach)))) * (1 + 1e-9)
    dlon = np.where((reach >= 90.0) | ~(dlon < 180.0), 180.0, dlon + 1e-9)
    boxes: list[tuple[float, float, float, float]] = []
    for x, half_lon, y, half_lat in zip(
        lon.tolist(), dlon.tolist(), lat.tolist(), dlat.tolist(), strict=True
    ):
        south, north = max(y - half_lat, -90.0), min(y + half_lat, 90.0)
        west, east = x - half_lon, x + half_lon
        boxes.append((max(west, -180.0), south, min(east, 180.0), north))
        if west < -180.0:
            boxes.append((west + 360.0, south, 180.0, north))
        if east > 180.0:
            boxes.append((-180.0, south, east - 360.0, north))
    return ([b[0] for b in boxes], [b[1] for b in boxes], [b[2] for b in boxes],
            [b[3] for b in boxes])  # fmt: skip


def disc_box(lon: float, lat: float, radius: float) -> tuple[float, float, float, float]:
    """One lon/lat box holding the disc: ``disc_boxes``', all longitudes when it is split."""
    west, south, east, north = disc_boxes(np.array([lon]), np.array([lat]), np.array([radius]))
    if len(west) > 1:
        return -180.0, min(south), 180.0, max(north)
    return west[0], south[0], east[0], north[0]


@lru_cache(maxsize=200_000)
def _cell_disc(cell: int) -> tuple[float, float, float]:
    """(lon, lat, radius in metres) of a disc on the ellipsoid holding every point of the cell.

    H3 cells are polygons on the sphere (great-circle edges, lat/lon taken as spherical), so
    they lie in the convex hull of their vertices, and so in any cap (under a hemisphere)
    holding the vertices: the vertex farthest from the centre bounds every point's sphere
    distance, and the ellipsoidal distance is within SPHERE_ERROR of it (plus a metre for
    rounding). Plain floats: numpy's overhead on six vertices cost more than the arithmetic.
    """
    lat, lon = h3lib.api.basic_int.cell_to_latlng(cell)
    phi = math.radians(lat)
    cos_phi = math.cos(phi)
    farthest = 0.0
    for vertex_lat, vertex_lon in h3lib.api.basic_int.cell_to_boundary(cell):
        vertex_phi = math.radians(vertex_lat)
        # haversine on the sphere (numerically safe for small distances)
        a = (
            math.sin((vertex_phi - phi) / 2) ** 2
            + cos_phi * math.cos(vertex_phi) * math.sin(math.radians(vertex_lon - lon) / 2) ** 2
        )
        farthest = max(farthest, a)
    sphere_m = 2 * SPHERE_RADIUS_M * math.asin(math.sqrt(min(max(farthest, 0.0), 1.0)))
    return lon, lat, sphere_m * (1 + SPHERE_ERROR) + 1.0


@lru_cache(maxsize=64)
def _discs(cells: tuple[int, ...]) -> np.ndarray:
    """``_cell_disc`` of each cell as rows (lon, lat, radius); the same cells come again."""
    return np.array([_cell_disc(c) for c in cells], dtype=float).reshape(-1, 3)


@dataclass
class _Level:
    """Occupied cells of one resolution around the point: where facilities can be, how many."""

    resolution: int
    cells: np.ndarray
    counts: np.ndarray
    #: rows (lon, lat, radius) of ``_cell_disc``
    discs: np.ndarray
    #: ellipsoidal metres from the point to each cell's centre
    to_centre: np.ndarray

    @classmethod
    def at(
        cls, resolution: int, cells: np.ndarray, counts: np.ndarray, discs: np.ndarray,
        lat: float, lon: float,
    ) -> _Level:  # fmt: skip
        """The level, with each centre measured exactly from (lat, lon)."""
        to_centre = np.zeros(0)
        if len(discs):
            n = len(discs)
            _, _, to_centre = GEOD.inv(np.full(n, lon), np.full(n, lat), discs[:, 0], discs[:, 1])
        return cls(resolution, cells, counts, discs, np.asarray(to_centre, dtype=float))

    @property
    def nearest_m(self) -> np.ndarray:
        """No facility of a cell is nearer than this (its centre's distance less the radius)."""
        return np.asarray(self.to_centre - self.discs[:, 2] - 1.0)

    def bound(self, wanted: int) -> float:
        """A distance within which `wanted` counted facilities surely lie (inf if fewer)."""
        far_edge = self.to_centre + self.discs[:, 2] + 1.0
        order = np.argsort(far_edge)
        enough = np.flatnonzero(np.cumsum(self.counts[order]) >= wanted)
        return float(far_edge[order[enough[0]]]) if len(enough) else math.inf

    def within(self, threshold: float) -> np.ndarray:
        """Mask of the cells that may hold a facility at most `threshold` away."""
        return np.asarray(self.nearest_m <= threshold)

    def boxes(self, mask: np.ndarray) -> tuple[list[float], list[float], list[float], list[float]]:
        """(west, south, east, north) of lon/lat boxes holding the discs of the masked cells."""
        return disc_boxes(*(self.discs[mask, i] for i in range(3)))


class _Stale(Exception):
    """Kept counts do not hold in a statement's snapshot (facilities changed, or a queue)."""


def _check(row: dict[str, Any] | None, store: _Counts, checked: bool) -> None:
    """Raise ``_Stale`` unless the statement's snapshot is one the kept counts hold in."""
    if checked:
        return  # the counts were read in this very snapshot
    if row is None or row["version"] != store.version or row["pending"]:
        raise _Stale


async def _occupied_cells(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    layer_keys: list[str],
    store: _Counts,
    checked: bool,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(resolution, cells, counts, discs) of the cells holding live facilities of these layers,
    at the finest resolution with at most MAX_CELLS of them."""
    key = tuple(sorted(layer_keys))
    kept = store.coarse.get(key)
    if kept is not None:
        return kept
    cells: list[int] = []
    counts: list[int] = []
    resolution = FAR_RESOLUTIONS[0]
    # one row of two arrays: a row per cell cost more in Python than the query
    for resolution in FAR_RESOLUTIONS:
        # a cell has a row per layer: this many rows hold more than MAX_CELLS cells, and fewer
        # are all there are
        rows = (MAX_CELLS + 1) * len(layer_keys)
        cursor = await conn.execute(_CELLS, (resolution, layer_keys, rows))
        row = await cursor.fetchone()
        _check(row, store, checked)
        cells, counts = (list(row["cells"]), list(row["counts"])) if row else ([], [])
        if len(cells) <= MAX_CELLS:
            break
    found = (
        resolution,
        np.array(cells, dtype=np.int64),
        np.array(counts, dtype=np.int64),
        _discs(tuple(int(c) for c in cells)),
    )
    store.coarse[key] = found
    return found


async def _finer_counts(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    resolution: int,
    layer_keys: list[str],
    cells: np.ndarray,
    store: _Counts,
    checked: bool,
) -> np.ndarray:
    """How many live facilities of these layers each cell holds (each cell read once)."""
    known = store.finer.setdefault((resolution, tuple(sorted(layer_keys))), {})
    wanted = cells.tolist()
    missing = [c for c in wanted if c not in known]
    if missing:
        cursor = await conn.execute(_FINER, (resolution, layer_keys, missing))
        row = await cursor.fetchone()
        _check(row, store, checked)
        read = dict.fromkeys(missing, 0)
        if row:
            read.update(zip(row["cells"], row["counts"], strict=True))
        known.update(read)
        store.kept += len(missing)
    return np.array([known[c] for c in wanted], dtype=np.int64)


@lru_cache(maxsize=5_000)  # ~1-4 kB each
def _cover(cell: int, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(cells, their ``_cell_disc`` rows): every cell of `resolution` that meets `cell`'s disc.

    Grown ring by ring around the finer cell holding the disc's centre until a whole ring lies
    outside the disc: a path from the centre to any point of a cell beyond that ring passes
    through it (neighbouring cells differ by one ring), so no cell beyond meets the disc.
    """
    lon, lat, radius = _cell_disc(cell)
    origin = h3lib.api.basic_int.latlng_to_cell(lat, lon, resolution)
    inside = [origin]
    ring_no = 0
    while True:
        ring_no += 1
        seen = set(inside)
        ring = [c for c in h3lib.api.basic_int.grid_disk(origin, ring_no) if c not in seen]
        ring_discs = np.array([_cell_disc(c) for c in ring], dtype=float).reshape(-1, 3)
        n = len(ring)
        _, _, to_ring = GEOD.inv(
            np.full(n, lon), np.full(n, lat), ring_discs[:, 0], ring_discs[:, 1]
        )
        if bool(np.all(to_ring - ring_discs[:, 2] > radius)):
            cells = np.array(sorted(inside), dtype=np.int64)
            return cells, np.array([_cell_disc(int(c)) for c in cells], dtype=float)
        inside.extend(ring)


async def _refine(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    level: _Level,
    layer_keys: list[str],
    threshold: float,
    wanted: int,
    point: tuple[float, float],
    store: _Counts,
    checked: bool,
) -> tuple[_Level, float]:
    """Finer levels while the cells that may hold a facility within `threshold` hold many.

    Every facility within the threshold lies in a kept cell, so in a finer cell meeting that
    cell's disc (``_cover``), which is occupied, so read here; the finer cells' counts then
    give a nearer threshold and fewer, smaller discs to rank. Down to the finest counted
    resolution (10: cells about 66 m across; h3_counts keeps no finer ones).
    """
    while level.resolution < h3cells.FINEST_COUNTED:
        kept = level.within(threshold)
        if int(level.counts[kept].sum()) <= FINE_FACILITIES:
            break
        finer = min(level.resolution + FINE_STEP, h3cells.FINEST_COUNTED)
        covers = [_cover(int(c), finer) for c in level.cells[kept]]
        if not covers:
            break
        cells, first = np.unique(np.concatenate([c for c, _ in covers]), return_index=True)
        if len(cells) > MAX_CELLS:
            break
        discs = np.concatenate([d for _, d in covers])[first]
        counts = await _finer_counts(conn, finer, layer_keys, cells, store, checked)
        held = counts > 0
        level = _Level.at(finer, cells[held], counts[held], discs[held], *point)
        threshold = min(threshold, level.bound(wanted))
    return level, threshold


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
    cache: CellCache | None = None,
) -> list[dict[str, Any]]:
    """The k nearest when the sphere's bound is too loose: by cell bounds (module docstring).

    ``kth`` is an ellipsoidal distance within which k facilities are known to lie (or inf).
    With counts kept from an earlier snapshot, each statement says whether its snapshot has
    the same facilities and nothing queued; if not, everything is read again in one snapshot.
    """
    cache = cache or CellCache()
    search = _FarSearch(conn, (lat, lon), filters, params, kth, closed, settings, moment)
    kept = cache.counts
    if kept.version is not None:
        try:
            return await search.run(kept, checked=False)
        except _Stale:
            pass
    # the cells and the facilities in one snapshot: a facility whose cell is counted after the
    # cells were read would otherwise be neither in them nor still queued
    async with conn.transaction():
        cursor = await conn.execute(_SNAPSHOT)
        while cursor.pgresult is not None and cursor.pgresult.ntuples == 0 and cursor.nextset():
            pass
        state = await cursor.fetchone()
        version = None if state is None or state["version"] is None else int(state["version"])
        store = cache.for_snapshot(version, bool(state and state["pending"]))
        return await search.run(store, checked=True)


@dataclass
class _FarSearch:
    """One far request: its point, filters and bound, searched with some kept counts."""

    conn: psycopg.AsyncConnection[dict[str, Any]]
    point: tuple[float, float]
    filters: Filters
    params: dict[str, Any]
    kth: float
    closed: list[str] | None
    settings: Settings
    moment: datetime

    async def run(self, store: _Counts, *, checked: bool) -> list[dict[str, Any]]:
        """The k nearest; ``_Stale`` if a statement's snapshot is not one `store` holds in."""
        filters = self.filters
        limit_m = math.inf if filters.max_distance_m is None else filters.max_distance_m
        cap = min(self.kth, limit_m)
        resolution, cells, counts, discs = await _occupied_cells(
            self.conn, filters.layers, store, checked
        )
        coarse = _Level.at(resolution, cells, counts, discs, *self.point)
        if not len(cells):
            # no cells counted (all queued): every facility is a candidate
            found = await self.within(coarse, math.inf, store, checked)
            return _taken(found[: filters.k])
        wanted = filters.k
        while True:
            # every facility of the cells nearest by their far edge lies within that edge
            threshold = min(coarse.bound(wanted), cap)
            level, threshold = await _refine(
                self.conn, coarse, filters.layers, threshold, wanted, self.point, store, checked
            )
            # a millimetre over: the cells' bounds are pyproj's geodesic, the candidates'
            # distances PostGIS's (the same algorithm), which can differ by nanometres
            found = await self.within(level, threshold + 1e-3, store, checked)
            if len(found) >= filters.k:
                return _taken(found[: filters.k])
            if threshold >= cap:
                if cap >= limit_m:
                    return _taken(found)
                cap = limit_m  # the k candidates changed since they were read: look on
            # filters left fewer than k this near: look further
            wanted *= 4

    async def within(
        self, level: _Level, threshold: float, store: _Counts, checked: bool
    ) -> list[dict[str, Any]]:
        """The accepted facilities at most `threshold` away, nearest first."""
        x0, y0, x1, y1 = level.boxes(level.within(threshold))
        query = _far_query(self.filters, bool(self.closed), self.settings)
        params = {
            **self.params,
            **{
                name: _float_array(v) for name, v in zip(_BOX_PARAMS, (x0, y0, x1, y1), strict=True)
            },
            "threshold": threshold,
        }
        if checked or len(x0) <= JIT_SAFE_BOXES:
            rows = await (await self.conn.execute(query, params, prepare=True)).fetchall()
        else:
            # many boxes: the estimate nears jit_above_cost (the snapshot path has JIT off)
            async with self.conn.transaction():
                await self.conn.execute("SET LOCAL jit = off")
                rows = await (await self.conn.execute(query, params, prepare=True)).fetchall()
        if not rows:
            raise _Stale  # the state row always comes: only a broken snapshot has none
        _check(
            {"version": rows[0]["snapshot_version"], "pending": rows[0]["snapshot_pending"]},
            store,
            checked,
        )
        # within the threshold and nearest first already (the statement's ORDER BY)
        timezone = self.settings.district.timezone
        return [
            r
            for r in rows
            if r["id"] is not None and _passes(r, self.filters, timezone, self.moment)
        ]


#: the parameters holding the boxes' edges
_BOX_PARAMS = ("x0", "y0", "x1", "y1")


def _float_array(values: list[float]) -> str:
    """A float8[] literal of `values`: repr is exact, and psycopg's list dumper cost ~0.3 ms a
    request for the boxes' few hundred floats."""
    return "{" + ",".join(map(repr, values)) + "}"


def _far_query(filters: Filters, closed: bool, settings: Settings) -> str:
    """The far path's statement text for one combination, composed once like ``_query``'s.

    The k nearest within the threshold are all it needs, unless open_now is evaluated in
    Python too (for expressions not in the closed list): then every candidate comes.
    """
    limit = None if filters.open_now else filters.k
    key = (
        filters.max_distance_m is not None, filters.accessible, filters.available,
        filters.open_now, closed, -1 if limit is None else limit,
        settings.toilets.online_window_s,
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
        for extra in ("planar_deg", "snapshot_version", "snapshot_pending"):
            row.pop(extra, None)
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
            hours=_kept(request, "nearest_hours", HoursCache),
            extent=_kept(request, "nearest_extent", Extent),
            cells=_kept(request, "nearest_cells", CellCache),
        )
    timezone = settings.district.timezone
    features = [to_feature(row, timezone=timezone) for row in rows]
    body = feature_collection(features, numberReturned=len(features))
    return json_response(body, media_type="application/geo+json")
