"""Smart-toilet live status and ratings as other queries see them (filled in by "Smart toilets").

The interface the query API and the pages use; the smart-toilet issue implements it:
- ``available_filter()``: an SQL condition on facility alias ``f``: a toilet with a free stall
  now and an online sensor.
- ``h3_metric(metric)``: for ``avg_rating`` / ``free_stalls``, the SQL aggregate expression
  over facility alias ``f`` and the joins it needs.
- ``attach(conn, rows, settings)``: adds ``live`` (toilets) and ``rating`` to facility rows.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql

from geoservice.errors import InvalidParameter
from geoservice.settings import Settings


def available_filter() -> sql.Composable:
    """SQL condition (alias f): toilet with a free stall now and an online sensor."""
    return sql.SQL("FALSE")


def h3_metric(metric: str) -> tuple[sql.Composable, sql.Composable]:
    """(aggregate expression, joins) for an H3 metric other than count."""
    raise InvalidParameter(f"metric {metric!r} is not available yet; allowed: count")


async def attach(
    conn: AsyncConnection[dict[str, Any]], rows: list[dict[str, Any]], settings: Settings
) -> None:
    """Add ``live`` (toilets: stalls_total, stalls_free, online, last_seen) and ``rating``."""
    for row in rows:
        if row["layer"] == "toilet":
            row.setdefault("live", None)
        row.setdefault("rating", {"average": None, "count": 0})
