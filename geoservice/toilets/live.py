"""Smart-toilet live status and ratings as other queries see them.

The interface the query API and the pages use:
- ``available_filter()``: an SQL condition on facility alias ``f``: a toilet with a free stall
  now and an online sensor.
- ``h3_metric(metric)``: for ``avg_rating`` / ``free_stalls``, the SQL aggregate expression
  over facility alias ``f`` and the joins it needs.
- ``columns(settings)`` / ``joins(alias)`` / ``take(row)``: the same, inside a caller's own
  query (select-list fragment, LEFT JOIN LATERALs, folding the columns into the row).
- ``attach(conn, rows, settings)``: adds ``live`` (toilets) and ``rating`` to facility rows,
  in one query whatever the number of rows.

The fragments hold no placeholders (callers use named or positional parameters of their own):
the few values they need are rendered as literals by psycopg.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from psycopg import AsyncConnection, sql

from geoservice.api.errors import InvalidParameter
from geoservice.api.features import iso
from geoservice.settings import Settings, ToiletSettings
from layers import LIVE_STATUS, has_capability, keys_with

#: days of the recent rating average
RECENT_DAYS = 30


@lru_cache(maxsize=1)
def _default_toilet_settings() -> ToiletSettings:
    return ToiletSettings()


def _online_window(settings: Settings | None) -> int:
    toilets = settings.toilets if settings is not None else _default_toilet_settings()
    return toilets.online_window_s


def _online(alias: str, window_s: int) -> sql.Composable:
    return sql.SQL("{}.last_seen > now() - make_interval(secs => {})").format(
        sql.Identifier(alias), sql.Literal(window_s)
    )


def live_layers() -> sql.Composable:
    """The keys of the layers with live status (LIVE_STATUS), as an SQL array literal."""
    return sql.Literal(list(keys_with(LIVE_STATUS)))


def available_filter(settings: Settings | None = None) -> sql.Composable:
    """SQL condition (alias f): toilet with a free stall now and an online sensor."""
    return sql.SQL(
        "f.layer = ANY({}) AND EXISTS (SELECT 1 FROM toilet_status live_s"
        " WHERE live_s.facility_id = f.id AND live_s.stalls_free > 0 AND {})"
    ).format(live_layers(), _online("live_s", _online_window(settings)))


def h3_metric(
    metric: str, settings: Settings | None = None
) -> tuple[sql.Composable, sql.Composable]:
    """(aggregate expression, joins) for an H3 metric other than count."""
    if metric == "avg_rating":
        # weighted by ratings: a cell's average over all its facilities' ratings
        return (
            sql.SQL("round(sum(live_r.total)::numeric / nullif(sum(live_r.n), 0), 2)"),
            sql.SQL(
                "LEFT JOIN (SELECT facility_id, sum(score) AS total, count(*) AS n"
                " FROM facility_ratings GROUP BY facility_id) live_r"
                " ON live_r.facility_id = f.id"
            ),
        )
    if metric == "free_stalls":
        return (
            sql.SQL("coalesce(sum(live_s.stalls_free) FILTER (WHERE {}), 0)").format(
                _online("live_s", _online_window(settings))
            ),
            sql.SQL("LEFT JOIN toilet_status live_s ON live_s.facility_id = f.id"),
        )
    raise InvalidParameter(
        f"metric {metric!r} is not known; allowed: count, avg_rating, free_stalls"
    )


def _average(value: Any) -> float | None:
    return round(float(value), 2) if value is not None else None


def columns(settings: Settings | None = None) -> sql.Composable:
    """Select-list fragment of the live and rating columns ``joins`` makes available."""
    return sql.SQL(
        "live_s.stalls_total AS live_stalls_total, live_s.stalls_free AS live_stalls_free,"
        " live_s.last_seen AS live_last_seen, live_s.facility_id AS live_facility_id,"
        " coalesce(live_s.last_seen > now() - make_interval(secs => {}), false) AS live_online,"
        " live_r.average AS rating_average, live_r.n AS rating_count,"
        " live_r.average_30d AS rating_average_30d, live_r.n_30d AS rating_count_30d"
    ).format(sql.Literal(_online_window(settings)))


def joins(alias: str) -> sql.Composable:
    """LEFT JOIN LATERALs adding a facility's live status and rating to rows aliased `alias`.

    `alias` needs ``id`` and ``layer``; each row costs two index probes, whatever the table size.
    """
    row = sql.Identifier(alias)
    return sql.SQL(
        " LEFT JOIN LATERAL (SELECT s.facility_id, s.stalls_total, s.stalls_free, s.last_seen"
        "  FROM toilet_status s WHERE {row}.layer = ANY({live}) AND s.facility_id = {row}.id"
        "  AND EXISTS (SELECT 1 FROM toilet_devices d"
        "              WHERE d.facility_id = s.facility_id AND d.revoked_at IS NULL)) live_s"
        " ON true"
        " LEFT JOIN LATERAL (SELECT avg(score) AS average, count(*) AS n,"
        "  avg(score) FILTER (WHERE created_at > now() - make_interval(days => {days}))"
        "  AS average_30d,"
        "  count(*) FILTER (WHERE created_at > now() - make_interval(days => {days})) AS n_30d"
        "  FROM facility_ratings WHERE facility_id = {row}.id) live_r ON true"
    ).format(row=row, live=live_layers(), days=sql.Literal(RECENT_DAYS))


def take(row: dict[str, Any]) -> None:
    """Fold the ``columns`` of a row into ``live`` (toilets) and ``rating``."""
    online = row.pop("live_online")
    known = row.pop("live_facility_id") is not None
    total, free, seen = (
        row.pop(k) for k in ("live_stalls_total", "live_stalls_free", "live_last_seen")
    )
    if has_capability(row["layer"], LIVE_STATUS):
        row["live"] = (
            {
                "stalls_total": total,
                "stalls_free": free if online else None,
                "online": online,
                "last_seen": iso(seen),
            }
            if known
            else None
        )
    row["rating"] = {
        "average": _average(row.pop("rating_average")),
        "count": int(row.pop("rating_count") or 0),
        "average_30d": _average(row.pop("rating_average_30d")),
        "count_30d": int(row.pop("rating_count_30d") or 0),
    }


async def attach(
    conn: AsyncConnection[dict[str, Any]], rows: list[dict[str, Any]], settings: Settings
) -> None:
    """Add ``live`` (toilets: stalls_total, stalls_free, online, last_seen) and ``rating``.

    One query, whatever the number of rows; queries that can join ``joins`` themselves
    (nearest) save even that round trip.
    """
    if not rows:
        return
    query = sql.SQL(
        "SELECT c.id, c.layer, {columns} FROM unnest(%s::text[], %s::text[]) AS c(id, layer){joins}"
    ).format(columns=columns(settings), joins=joins("c"))
    cursor = await conn.execute(
        query, ([r["id"] for r in rows], [r["layer"] for r in rows]), prepare=True
    )
    found = {}
    for extra in await cursor.fetchall():
        take(extra)
        found[extra["id"]] = extra
    for row in rows:
        extra = found[row["id"]]
        if "live" in extra:
            row["live"] = extra["live"]
        row["rating"] = extra["rating"]
