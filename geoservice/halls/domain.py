"""What a service hall's rules are, without I/O: the slot grid, phone numbers, codes, states.

The slot grid: a hall's OSM ``opening_hours`` gives the open intervals of a local day in the
district's time zone (lunch break and closed days included); each interval is cut into slots
of ``slot_minutes`` from its start, and only whole slots count (a 09:00–12:00 morning with 25
minutes gives 09:00, 09:25, … 11:10). A start is bookable when it is on that grid, not in the
past, and on a day no further ahead than ``booking_days_ahead``.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import opening_hours

#: every state a case passes through, in the order they happen
CASE_STATES = (
    "booked", "checked_in", "called", "done", "needs_documents", "referred", "cancelled",
    "lapsed", "no_show",
)  # fmt: skip
#: how a case can end at the window
OUTCOMES = ("done", "needs_documents", "referred")
#: states after which a case is over
ENDED = ("done", "needs_documents", "referred", "cancelled", "lapsed", "no_show")
#: the national five-level scale (好差评): score → label in each language
SCALE: dict[int, dict[str, str]] = {
    5: {"zh-Hans": "非常满意", "zh-Hant": "非常滿意", "en": "Very satisfied"},
    4: {"zh-Hans": "满意", "zh-Hant": "滿意", "en": "Satisfied"},
    3: {"zh-Hans": "基本满意", "zh-Hant": "基本滿意", "en": "Fairly satisfied"},
    2: {"zh-Hans": "不满意", "zh-Hant": "不滿意", "en": "Dissatisfied"},
    1: {"zh-Hans": "非常不满意", "zh-Hant": "非常不滿意", "en": "Very dissatisfied"},
}

#: codes avoid letters and digits that read alike (0/O, 1/I/L)
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 10
_CODE = re.compile(rf"^[{CODE_ALPHABET}]{{{CODE_LENGTH}}}$")
#: a mainland mobile number: 11 digits, 1 then 3–9 (optionally written +86 / 86 first)
_MOBILE = re.compile(r"^(?:\+?86)?(1[3-9]\d{9})$")
_PHONE_SEPARATORS = re.compile(r"[\s\-()]")
#: characters names and comments may not hold (NUL and other controls)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME = 50
#: queue groups are letters: A001, B001, …
QUEUE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
#: a ticket number's digits (A001 … A999, then A1000)
NUMBER_DIGITS = 3


def new_code() -> str:
    """An unguessable booking code (10 of 31 characters: about 2⁴⁹ codes)."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(value: str) -> str | None:
    """The code in canonical form, or None when it cannot be one."""
    code = value.strip().upper().replace("-", "").replace(" ", "")
    return code if _CODE.match(code) else None


def normalise_phone(value: str) -> str:
    """The 11-digit mobile number, or ValueError saying what is allowed."""
    digits = _PHONE_SEPARATORS.sub("", value)
    found = _MOBILE.match(digits)
    if found is None:
        raise ValueError(
            "must be a mainland China mobile number: 11 digits starting 13–19 (e.g. 13812341234),"
            " optionally with +86"
        )
    return found.group(1)


def mask_phone(phone: str | None) -> str | None:
    """138****1234: the first three and last four digits."""
    if phone is None:
        return None
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 7 else "****"


def mask_name(name: str | None) -> str | None:
    """张* / J***: the first character only."""
    if not name:
        return None
    return name[0] + "*" * min(3, max(1, len(name) - 1))


def clean_name(value: str) -> str:
    """A resident's name: controls removed, 1–50 characters, or ValueError."""
    name = " ".join(CONTROL.sub("", value).split())
    if not name:
        raise ValueError("must not be empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"at most {MAX_NAME} characters (got {len(name)})")
    return name


def ticket_number(group: str, seq: int) -> str:
    """A001: the group's letter and its day's sequence number."""
    return f"{group}{seq:0{NUMBER_DIGITS}d}"


def queue_groups(windows: list[tuple[str, list[str]]]) -> dict[str, str]:
    """Matter id → letter: windows serving the same set of matters share a letter, in order."""
    letters: dict[frozenset[str], str] = {}
    groups: dict[str, str] = {}
    for _, matters in windows:
        key = frozenset(matters)
        if key not in letters:
            if len(letters) == len(QUEUE_LETTERS):
                raise ValueError(f"at most {len(QUEUE_LETTERS)} groups of matters per hall")
            letters[key] = QUEUE_LETTERS[len(letters)]
        for matter in matters:
            groups.setdefault(matter, letters[key])
    return groups


@lru_cache(maxsize=1024)
def _parsed(hours: str) -> opening_hours.OpeningHours | None:
    try:
        return opening_hours.OpeningHours(hours)
    except (SyntaxError, ValueError, getattr(opening_hours, "ParserError", ValueError)):
        return None


def hours_parse(hours: str) -> bool:
    """Whether the opening hours parse."""
    return _parsed(hours) is not None


@dataclass(frozen=True)
class Slot:
    """One bookable period (aware datetimes in the district's zone)."""

    start: datetime
    end: datetime


@lru_cache(maxsize=4096)
def slot_grid(hours: str, slot_minutes: int, day: date, timezone: str) -> tuple[Slot, ...]:
    """The day's slots: each open interval cut into whole slots from its start."""
    parsed = _parsed(hours)
    if parsed is None or slot_minutes <= 0:
        return ()
    zone = ZoneInfo(timezone)
    begin = datetime.combine(day, time())
    end = begin + timedelta(days=1)
    step = timedelta(minutes=slot_minutes)
    slots: list[Slot] = []
    for start, stop, state, _ in parsed.intervals(begin, end):
        if state != opening_hours.State.OPEN:
            continue
        at = max(start, begin)
        stop = min(stop or end, end)
        while at + step <= stop:
            slots.append(Slot(at.replace(tzinfo=zone), (at + step).replace(tzinfo=zone)))
            at += step
    return tuple(slots)


def local_today(timezone: str, now: datetime | None = None) -> date:
    """Today in the district."""
    return (now or datetime.now(ZoneInfo(timezone))).astimezone(ZoneInfo(timezone)).date()


def bookable_days(days_ahead: int, timezone: str, now: datetime | None = None) -> tuple[date, date]:
    """(first, last) local day a booking may be for: today … today + days_ahead."""
    today = local_today(timezone, now)
    return today, today + timedelta(days=days_ahead)


class OffGrid(ValueError):
    """A start that cannot be booked; the message says why and what is allowed."""


def check_start(
    start: datetime,
    *,
    hours: str,
    slot_minutes: int,
    days_ahead: int,
    timezone: str,
    now: datetime | None = None,
) -> Slot:
    """The slot starting at `start`, or OffGrid saying what is wrong."""
    if start.tzinfo is None:
        raise OffGrid("must carry a time zone offset (RFC 3339, e.g. 2026-01-05T09:00:00+08:00)")
    now = now or datetime.now(ZoneInfo(timezone))
    first, last = bookable_days(days_ahead, timezone, now)
    try:
        local = start.astimezone(ZoneInfo(timezone))
    except (OverflowError, ValueError) as exc:
        raise OffGrid(f"is not a usable time ({exc})") from exc
    if start <= now:
        raise OffGrid(f"is in the past (now {now.astimezone(ZoneInfo(timezone)).isoformat()})")
    if local.date() > last:
        raise OffGrid(f"is beyond the booking horizon: days {first} … {last} can be booked")
    grid = slot_grid(hours, slot_minutes, local.date(), timezone)
    for slot in grid:
        if slot.start == local:
            return slot
    if not grid:
        raise OffGrid(f"the hall is closed on {local.date()} (hours: {hours})")
    starts = ", ".join(s.start.strftime("%H:%M") for s in grid[:6])
    raise OffGrid(
        f"is not a slot start on {local.date()}: slots of {slot_minutes} minutes within the"
        f" hours {hours}, starting {starts}{' …' if len(grid) > 6 else ''}"
    )


def estimate_minutes(ahead: int, service_minutes: float, windows: int) -> int:
    """Minutes until a ticket with `ahead` tickets before it is called."""
    if ahead <= 0:
        return 0
    return math.ceil(ahead * service_minutes / max(1, windows))
