"""Smart-toilet live status and ratings as other queries see them.

The interface the query API and the pages use:
- ``available_filter()``: an SQL condition on facility alias ``f``: a toilet with a free stall
  now and an online sensor.
- ``h3_metric(metric)``: for ``avg_rating`` / ``free_stalls``, the SQL aggregate expression
  over facility alias ``f`` and the joins it needs.
- ``attach(conn, rows, settings)``: adds ``live`` (toilets) and ``rating`` to facility rows,
  in two queries whatever the number of rows.

The fragments hold no placeholders (callers use named or positional parameters of their own):
the few values they need are rendered as literals by psycopg.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from psycopg import AsyncConnection, sql

from geoservice.errors import InvalidParameter
from geoservice.features import iso
from geoservice.settings import Settings, ToiletSettings

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


def available_filter(settings: Settings | None = None) -> sql.Composable:
    """SQL condition (alias f): toilet with a free stall now and an online sensor."""
    return sql.SQL(
        "f.layer = 'toilet' AND EXISTS (SELECT 1 FROM toilet_status live_s"
        " WHERE live_s.facility_id = f.id AND live_s.stalls_free > 0 AND {})"
    ).format(_online("live_s", _online_window(settings)))


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


async def attach(
    conn: AsyncConnection[dict[str, Any]], rows: list[dict[str, Any]], settings: Settings
) -> None:
    """Add ``live`` (toilets: stalls_total, stalls_free, online, last_seen) and ``rating``."""
    if not rows:
        return
    ids = list({row["id"] for row in rows})
    toilet_ids = list({row["id"] for row in rows if row["layer"] == "toilet"})
    live: dict[str, dict[str, Any]] = {}
    if toilet_ids:
        cursor = await conn.execute(
            "SELECT s.facility_id, s.stalls_total, s.stalls_free, s.last_seen,"
            " coalesce(s.last_seen > now() - make_interval(secs => %s), false) AS online"
            " FROM toilet_status s WHERE s.facility_id = ANY(%s)"
            " AND EXISTS (SELECT 1 FROM toilet_devices d"
            "             WHERE d.facility_id = s.facility_id AND d.revoked_at IS NULL)",
            (settings.toilets.online_window_s, toilet_ids),
        )
        for r in await cursor.fetchall():
            live[r["facility_id"]] = {
                "stalls_total": r["stalls_total"],
                "stalls_free": r["stalls_free"] if r["online"] else None,
                "online": r["online"],
                "last_seen": iso(r["last_seen"]),
            }
    cursor = await conn.execute(
        "SELECT facility_id, avg(score) AS average, count(*) AS count,"
        " avg(score) FILTER (WHERE created_at > now() - make_interval(days => %s))"
        " AS average_30d,"
        " count(*) FILTER (WHERE created_at > now() - make_interval(days => %s)) AS count_30d"
        " FROM facility_ratings WHERE facility_id = ANY(%s) GROUP BY facility_id",
        (RECENT_DAYS, RECENT_DAYS, ids),
    )
    ratings = {r["facility_id"]: r for r in await cursor.fetchall()}
    for row in rows:
        if row["layer"] == "toilet":
            row["live"] = live.get(row["id"])
        stats = ratings.get(row["id"])
        row["rating"] = {
            "average": _average(stats["average"]) if stats else None,
            "count": int(stats["count"]) if stats else 0,
            "average_30d": _average(stats["average_30d"]) if stats else None,
            "count_30d": int(stats["count_30d"]) if stats else 0,
        }
