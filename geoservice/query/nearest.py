"""The k nearest facilities by geodesic distance on the WGS 84 ellipsoid, exactly.

The spatial index orders candidates by distance on a sphere (geography ``<->``); the ellipsoid
differs from it by less than 0.6 % of the distance anywhere on Earth. So candidates are fetched
by index, re-ranked by their ellipsoidal distance, and the fetch widens until no facility not
yet fetched can be nearer than the k-th: every unfetched one lies at sphere distance ≥ that of
the last candidate, hence at ellipsoidal distance ≥ that times (1 - SPHERE_ERROR).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, Query, Request, Response
from psycopg import sql

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


def _compose(filters: Filters, closed: bool, limit: int, settings: Settings) -> sql.Composed:
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
    return sql.SQL(_SQL).format(
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
) -> list[dict[str, Any]]:
    """Rows of the k nearest facilities (ellipsoidal ``distance_m`` ascending), exact.

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
        if len(accepted) >= filters.k and accepted[filters.k - 1]["distance_m"] < unseen_floor:
            return _taken(accepted[: filters.k])
        limit = min(limit * 4, MAX_CANDIDATES)


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
            conn, lat, lon, filters, settings, hours=_hours_cache(request)
        )
    timezone = settings.district.timezone
    features = [to_feature(row, timezone=timezone) for row in rows]
    body = feature_collection(features, numberReturned=len(features))
    return json_response(body, media_type="application/geo+json")
