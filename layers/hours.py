"""OSM ``opening_hours``: whether a text is valid, and whether a place is open at a moment.

Both sides use it: ingest keeps only valid expressions, the service answers "open now" in the
district's time zone. Unknown or unparsable hours are never open (``None``, not ``False``).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import opening_hours

#: what opening-hours-py raises for text it cannot parse (ParserError is missing from its stubs)
_PARSE_ERRORS: tuple[type[Exception], ...] = (
    SyntaxError,
    ValueError,
    getattr(opening_hours, "ParserError", ValueError),
)


@lru_cache(maxsize=20000)
def _parse_hours(expression: str, timezone: str) -> opening_hours.OpeningHours | None:
    try:
        return opening_hours.OpeningHours(expression, timezone=ZoneInfo(timezone))
    except _PARSE_ERRORS:
        return None


def hours_valid(expression: str | None) -> bool:
    """Whether a text is valid OSM opening_hours syntax."""
    return expression is not None and bool(expression) and bool(opening_hours.validate(expression))


def open_now(expression: str | None, timezone: str, now: datetime | None = None) -> bool | None:
    """True/False by the OSM opening_hours grammar in the district's zone; None when unknown."""
    if not expression:
        return None
    parsed = _parse_hours(expression, timezone)
    if parsed is None:
        return None
    moment = (now or datetime.now(ZoneInfo(timezone))).astimezone(ZoneInfo(timezone))
    state = parsed.state(moment.replace(tzinfo=None))[0]
    if state == opening_hours.State.OPEN:
        return True
    if state == opening_hours.State.CLOSED:
        return False
    return None


def open_state(
    expression: str | None, timezone: str, now: datetime | None = None
) -> tuple[bool | None, datetime | None]:
    """``open_now`` and the moment it next changes (None: unknown hours, or no change ahead)."""
    state = open_now(expression, timezone, now)
    parsed = _parse_hours(expression, timezone) if expression else None
    if parsed is None:
        return state, None
    moment = (now or datetime.now(ZoneInfo(timezone))).astimezone(ZoneInfo(timezone))
    change = parsed.next_change(moment.replace(tzinfo=None))
    if change is not None and change.tzinfo is None:
        change = change.replace(tzinfo=ZoneInfo(timezone))
    return state, change
