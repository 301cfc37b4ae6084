"""OSM ``opening_hours``: whether a text is valid, and whether a place is open at a moment.

Both sides use it: ingest keeps only valid expressions, the service answers "open now" in the
district's time zone. Unknown or unparsable hours are never open (``None``, not ``False``).

Public holidays (``PH``) follow the district's own calendar (mainland China's by default, from
the ``holidays`` package): the statutory holidays, the weekend days inside their breaks, and
the weekend days worked instead (调休上班). opening-hours-py's calendar for China knows only
New Year's Day, so on a day off the expression is evaluated with ``PH`` read as that day's
weekday (a rule for ``PH`` then holds that day, and no other rule changes), and on a weekend day
worked as on the Friday before (a working day's hours). Without ``PH`` an expression is
evaluated as written: a source that never mentions holidays is not closed on them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays
import opening_hours

#: the country whose public holidays ``PH`` means (the first deployment: Luohu, Shenzhen)
HOLIDAY_COUNTRY = "CN"
_PH = re.compile(r"\bPH\b")
_WEEKDAYS = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")

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


def public_days_off(years: Iterable[int], country: str = HOLIDAY_COUNTRY) -> set[date]:
    """Days off: the statutory holidays and the whole breaks around them.

    ``holidays`` lists the holidays and the weekdays moved into a break (调休); the weekend days
    inside a break (Saturday 5 October 2024) are added here, weekend days worked are not.
    """
    calendar = holidays.country_holidays(country, years=set(years))
    worked = set(getattr(calendar, "weekend_workdays", ()))
    days = set(calendar.keys())
    edge = set(days)
    while edge:
        edge = {day + timedelta(days=step) for day in edge for step in (-1, 1)}
        edge = {d for d in edge if d.weekday() >= 5 and d not in worked} - days
        days |= edge
    return days


def weekend_workdays(years: Iterable[int], country: str = HOLIDAY_COUNTRY) -> set[date]:
    """Weekend days that are working days (in China 调休上班)."""
    wanted = set(years)
    calendar = holidays.country_holidays(country, years=wanted)
    return {day for day in getattr(calendar, "weekend_workdays", ()) if day.year in wanted}


@lru_cache(maxsize=64)
def _calendar(year: int, country: str) -> tuple[frozenset[date], frozenset[date]]:
    # a break may start in December: the year's neighbours count for its edges
    years = (year - 1, year, year + 1)
    return frozenset(public_days_off(years, country)), frozenset(weekend_workdays(years, country))


def _as_on(expression: str, day: date, country: str) -> tuple[str, int]:
    """The expression and the shift in days to evaluate it at, for a moment on ``day``."""
    if not _PH.search(expression):
        return expression, 0
    off, worked = _calendar(day.year, country)
    if day in off:
        return _PH.sub(_WEEKDAYS[day.weekday()], expression), 0
    if day in worked:
        return expression, 4 - day.weekday()  # the Friday before: a working day
    return expression, 0


def open_now(expression: str | None, timezone: str, now: datetime | None = None) -> bool | None:
    """True/False by the OSM opening_hours grammar in the district's zone; None when unknown."""
    if not expression:
        return None
    moment = (now or datetime.now(ZoneInfo(timezone))).astimezone(ZoneInfo(timezone))
    local = moment.replace(tzinfo=None)
    expression, shift = _as_on(expression, local.date(), HOLIDAY_COUNTRY)
    parsed = _parse_hours(expression, timezone)
    if parsed is None:
        return None
    state = parsed.state(local + timedelta(days=shift))[0]
    if state == opening_hours.State.OPEN:
        return True
    if state == opening_hours.State.CLOSED:
        return False
    return None


def open_state(
    expression: str | None, timezone: str, now: datetime | None = None
) -> tuple[bool | None, datetime | None]:
    """``open_now`` and the moment it next changes (None: unknown hours, or no change ahead).

    With ``PH`` in the expression the day itself may change the answer (a holiday starts), so
    the change is at the latest the next local midnight, where it is worked out again.
    """
    state = open_now(expression, timezone, now)
    if not expression:
        return state, None
    zone = ZoneInfo(timezone)
    moment = (now or datetime.now(zone)).astimezone(zone)
    local = moment.replace(tzinfo=None)
    as_on, shift = _as_on(expression, local.date(), HOLIDAY_COUNTRY)
    parsed = _parse_hours(as_on, timezone)
    if parsed is None:
        return state, None
    change = parsed.next_change(local + timedelta(days=shift))
    if change is not None:
        change = change.replace(tzinfo=None) - timedelta(days=shift)
    if _PH.search(expression):
        midnight = datetime.combine(local.date() + timedelta(days=1), time())
        change = midnight if change is None else min(change, midnight)
    return state, None if change is None else change.replace(tzinfo=zone)
