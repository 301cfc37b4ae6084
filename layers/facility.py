"""What every facility is, whatever its layer: its statuses and which ones count as live.

The one definition of "live" (not removed) that every query, page, export and load shares:
removed facilities stay stored (ids stay stable, pages say "removed") but never appear in
nearest, counts, maps or lists.
"""

from __future__ import annotations

#: a facility's lifecycle, as stored in ``facilities.status``
STATUSES = ("active", "temporarily_closed", "removed")


def live(alias: str | None = "f") -> str:
    """SQL condition: the facility (table alias `alias`, None for none) is not removed."""
    column = f"{alias}.status" if alias else "status"
    return f"{column} <> 'removed'"
