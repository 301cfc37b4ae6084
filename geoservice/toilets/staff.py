"""Staff routes (staff token): ratings worst-first, open alerts, recording a cleaning.

Alerts are derived from current state when asked for, each with the time it started:
- ``low_rating``: 30-day average below the threshold from enough distinct raters (network
  addresses, each rater's ratings averaged first; since: when it fell, kept by the rating route);
- ``sensor_offline``: no reading for longer than the silence threshold (since: last seen);
- ``nh3_high``: ammonia above the threshold in the newest reading (since: that run's first);
- ``busy``: people since the last clean above the threshold (since: when it crossed it).
A cleaning closes ``nh3_high`` and ``busy`` (a new high reading opens them again).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import h3 as h3lib
from fastapi import APIRouter, Path, Query
from psycopg import sql

from geoservice.api.auth import StaffDep
from geoservice.api.deps import BBoxDep, LayersDep, PoolDep, SettingsDep
from geoservice.api.errors import InvalidParameter, NotFound
from geoservice.api.features import iso
from geoservice.toilets.ratings import RATER_STATS
from layers import LIVE_STATUS, has_capability
from layers.facility import live

router = APIRouter(tags=["staff"])

ALERT_KINDS = ("low_rating", "sensor_offline", "nh3_high", "busy")
#: most ratings in one page
MAX_LIMIT = 500
#: most alerts listed
MAX_ALERTS = 2000
_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, invalid or revoked staff token"},
    403: {"description": "not a staff token"},
}


def parse_since(value: str | None) -> datetime | None:
    """An RFC 3339 time with offset (query parameter ``since``), or None."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+", 1))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidParameter(
            "query parameter 'since' must be an RFC 3339 time with offset, "
            "e.g. 2024-05-01T00:00:00+08:00"
        )
    return parsed


def parse_cell(value: str | None) -> str | None:
    """An H3 cell index (query parameter ``h3``), or None."""
    if value is None or value == "":
        return None
    if not h3lib.is_valid_cell(value):
        raise InvalidParameter(f"query parameter 'h3': {value!r} is not an H3 cell index")
    return value


async def facilities_in_cell(conn: Any, cell: str) -> list[str]:
    """Ids of the facilities whose ``latlng_to_cell`` at the cell's resolution is the cell."""
    resolution = h3lib.get_resolution(cell)
    boundary = h3lib.cell_to_boundary(cell)
    lats = [lat for lat, _ in boundary]
    lons = [lon for _, lon in boundary]
    # the hexagon's box, widened a little: its edges are not straight in lon/lat
    pad_lat = (max(lats) - min(lats)) * 0.1
    pad_lon = (max(lons) - min(lons)) * 0.1
    if max(lons) - min(lons) > 180:  # crosses the antimeridian: no box
        cursor = await conn.execute(
            "SELECT id, ST_Y(geom) AS lat, ST_X(geom) AS lon FROM facilities"
        )
    else:
        cursor = await conn.execute(
            "SELECT id, ST_Y(geom) AS lat, ST_X(geom) AS lon FROM facilities"
            " WHERE geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)",
            (min(lons) - pad_lon, min(lats) - pad_lat, max(lons) + pad_lon, max(lats) + pad_lat),
        )
    return [
        row["id"]
        for row in await cursor.fetchall()
        if h3lib.latlng_to_cell(row["lat"], row["lon"], resolution) == cell
    ]


def rating_json(row: dict[str, Any]) -> dict[str, Any]:
    """A stored rating as staff see it (never the client hashes)."""
    return {
        "id": row["id"],
        "facility_id": row["facility_id"],
        "facility_name": row["facility_name"],
        "layer": row["layer"],
        "score": row["score"],
        "cleanliness": row["cleanliness"],
        "smell": row["smell"],
        "supplies": row["supplies"],
        "tags": row["tags"] or [],
        "comment": row["comment"],
        "created_at": iso(row["created_at"]),
        "lon": row["lon"],
        "lat": row["lat"],
    }


async def list_ratings(
    conn: Any,
    *,
    layers: list[str],
    sort: str = "worst",
    bbox: tuple[float, float, float, float] | None = None,
    cell: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Ratings joined to their facility, filtered and sorted (worst or most recent first)."""
    conditions = [sql.SQL("f.layer = ANY(%(layers)s)")]
    params: dict[str, Any] = {"layers": layers, "limit": limit, "offset": offset}
    if bbox is not None:
        # ST_Intersects, not `&&` alone: `&&` compares float4 boxes rounded outwards, so it
        # takes points up to ~1 m beyond the box's edges (edges themselves are inside)
        conditions.append(
            sql.SQL("ST_Intersects(f.geom, ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 4326))")
        )
        params.update(zip(("x0", "y0", "x1", "y1"), bbox, strict=True))
    if cell is not None:
        conditions.append(sql.SQL("f.id = ANY(%(in_cell)s)"))
        params["in_cell"] = await facilities_in_cell(conn, cell)
    if since is not None:
        conditions.append(sql.SQL("r.created_at >= %(since)s"))
        params["since"] = since
    order = (
        sql.SQL("r.score ASC, r.created_at DESC, r.id DESC")
        if sort == "worst"
        else sql.SQL("r.created_at DESC, r.id DESC")
    )
    query = sql.SQL(
        "SELECT r.id, r.facility_id, f.name AS facility_name, f.layer, r.score, r.cleanliness,"
        " r.smell, r.supplies, r.tags, r.comment, r.created_at,"
        " ST_X(f.geom) AS lon, ST_Y(f.geom) AS lat"
        " FROM facility_ratings r JOIN facilities f ON f.id = r.facility_id"
        " WHERE {conditions} ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s"
    ).format(conditions=sql.SQL(" AND ").join(conditions), order=order)
    cursor = await conn.execute(query, params)
    return [rating_json(row) for row in await cursor.fetchall()]


@router.get(
    "/api/v1/staff/ratings",
    summary="Ratings for staff, worst or most recent first (staff token)",
    responses=_UNAUTHORIZED,
)
async def staff_ratings(
    staff: StaffDep,
    pool: PoolDep,
    layers: LayersDep,
    bbox: BBoxDep,
    sort: Annotated[Literal["worst", "recent"], Query(description="worst or recent")] = "worst",
    h3: Annotated[
        str | None, Query(description="an H3 cell index (any resolution)", max_length=20)
    ] = None,
    since: Annotated[
        str | None, Query(description="RFC 3339: ratings since then", max_length=40)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> dict[str, Any]:
    """Ratings with their facility (comment as plain text: escape it when showing it)."""
    async with pool.connection() as conn:
        ratings = await list_ratings(
            conn,
            layers=layers,
            sort=sort,
            bbox=bbox,
            cell=parse_cell(h3),
            since=parse_since(since),
            limit=limit,
            offset=offset,
        )
    return {"ratings": ratings, "sort": sort, "limit": limit, "offset": offset}


_ALERTS_SQL = f"""
WITH live_devices AS (
    SELECT facility_id, min(created_at) AS registered
      FROM toilet_devices WHERE revoked_at IS NULL GROUP BY facility_id
), low AS (
    -- raters, not ratings: one address posting many low scores is one voice
    SELECT * FROM ({RATER_STATS.format(where="")}) stats
     WHERE n >= %(min_count)s AND average < %(below)s
), alerts AS (
    SELECT 'low_rating' AS kind, low.facility_id, coalesce(a.low_since, low.first) AS since,
           jsonb_build_object('average_30d', round(low.average, 2), 'count_30d', low.n) AS detail
      FROM low LEFT JOIN facility_rating_alerts a ON a.facility_id = low.facility_id
    UNION ALL
    SELECT 'sensor_offline', d.facility_id, coalesce(s.last_seen, d.registered),
           jsonb_build_object('last_seen', s.last_seen,
                              'silent_s', round(extract(epoch FROM now()
                                  - coalesce(s.last_seen, d.registered))))
      FROM live_devices d LEFT JOIN toilet_status s ON s.facility_id = d.facility_id
     WHERE coalesce(s.last_seen, d.registered) < now() - make_interval(secs => %(silent)s)
    UNION ALL
    SELECT 'nh3_high', s.facility_id, s.nh3_high_since,
           jsonb_build_object('nh3_ppm', s.nh3_ppm, 'threshold_ppm', %(nh3)s::float8)
      FROM toilet_status s JOIN live_devices d USING (facility_id)
     WHERE s.nh3_high_since IS NOT NULL
    UNION ALL
    SELECT 'busy', s.facility_id, s.busy_since,
           jsonb_build_object('people_since_clean', s.people_since_clean,
                              'threshold', %(busy)s::bigint, 'cleaned_at', s.cleaned_at)
      FROM toilet_status s JOIN live_devices d USING (facility_id)
     WHERE s.busy_since IS NOT NULL
)
SELECT alerts.kind, alerts.facility_id, f.name AS facility_name, f.layer, alerts.since,
       alerts.detail, ST_X(f.geom) AS lon, ST_Y(f.geom) AS lat
  FROM alerts JOIN facilities f ON f.id = alerts.facility_id
 WHERE {live("f")} AND alerts.kind = ANY(%(kinds)s)
 ORDER BY alerts.since, alerts.kind, alerts.facility_id
 LIMIT %(limit)s
"""


async def open_alerts(
    conn: Any, settings: Any, kinds: list[str] | None = None
) -> list[dict[str, Any]]:
    """The open alerts, oldest first, each with its kind, facility, since and detail."""
    toilets = settings.toilets
    cursor = await conn.execute(
        _ALERTS_SQL,
        {
            "min_count": toilets.low_rating_min_count,
            "below": toilets.low_rating_below,
            "silent": toilets.silent_after_s,
            "nh3": toilets.nh3_alert_ppm,
            "busy": toilets.busy_after_people,
            "kinds": kinds or list(ALERT_KINDS),
            "limit": MAX_ALERTS,
        },
    )
    return [
        {
            "kind": row["kind"],
            "facility_id": row["facility_id"],
            "facility_name": row["facility_name"],
            "layer": row["layer"],
            "since": iso(row["since"]),
            "detail": row["detail"],
            "lon": row["lon"],
            "lat": row["lat"],
        }
        for row in await cursor.fetchall()
    ]


@router.get(
    "/api/v1/staff/alerts",
    summary="Open alerts, oldest first (staff token)",
    responses=_UNAUTHORIZED,
)
async def staff_alerts(
    staff: StaffDep,
    pool: PoolDep,
    settings: SettingsDep,
    kind: Annotated[
        list[Literal["low_rating", "sensor_offline", "nh3_high", "busy"]] | None,
        Query(description="only these kinds (repeatable)", max_length=4),
    ] = None,
) -> dict[str, Any]:
    """Low ratings, silent sensors, high ammonia, heavy use since the last clean."""
    async with pool.connection() as conn:
        alerts = await open_alerts(conn, settings, list(kind) if kind else None)
    return {"alerts": alerts, "count": len(alerts)}


ToiletId = Annotated[str, Path(max_length=200, description="the toilet's facility id")]


@router.post(
    "/api/v1/staff/toilets/{facility_id}/cleaned",
    summary="Record a cleaning: resets the use counter, closes ammonia and use alerts",
    responses={**_UNAUTHORIZED, 404: {"description": "no such toilet"}},
)
async def toilet_cleaned(facility_id: ToiletId, staff: StaffDep, pool: PoolDep) -> dict[str, Any]:
    """Record that `staff` cleaned the toilet now."""
    async with pool.connection() as conn, conn.transaction():
        facility = await (
            await conn.execute("SELECT layer FROM facilities WHERE id = %s", (facility_id,))
        ).fetchone()
        if facility is None or not has_capability(facility["layer"], LIVE_STATUS):
            raise NotFound(f"no toilet with id {facility_id!r}")
        await conn.execute(
            "INSERT INTO toilet_status (facility_id) VALUES (%s) ON CONFLICT DO NOTHING",
            (facility_id,),
        )
        before = await (
            await conn.execute(
                "SELECT people_since_clean, nh3_high_since, busy_since FROM toilet_status"
                " WHERE facility_id = %s FOR UPDATE",
                (facility_id,),
            )
        ).fetchone()
        assert before is not None
        closed = [
            kind
            for kind, column in (("nh3_high", "nh3_high_since"), ("busy", "busy_since"))
            if before[column] is not None
        ]
        row = await (
            await conn.execute(
                "UPDATE toilet_status SET people_since_clean = 0, nh3_high_since = NULL,"
                " busy_since = NULL, cleaned_at = now(), cleaned_by = %s"
                " WHERE facility_id = %s RETURNING cleaned_at",
                (staff.name, facility_id),
            )
        ).fetchone()
        assert row is not None
        await conn.execute(
            "INSERT INTO toilet_cleanings (facility_id, staff_name, cleaned_at,"
            " people_since_clean, closed_alerts) VALUES (%s, %s, %s, %s, to_jsonb(%s::text[]))",
            (facility_id, staff.name, row["cleaned_at"], before["people_since_clean"], closed),
        )
    return {
        "facility_id": facility_id,
        "cleaned_at": iso(row["cleaned_at"]),
        "cleaned_by": staff.name,
        "people_since_clean": before["people_since_clean"],
        "closed_alerts": closed,
    }
