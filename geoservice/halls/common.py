"""What the hall routes share: id parameters, the hall's set-up, live load, client bounds."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Path, Request
from psycopg import AsyncConnection

from geoservice.api.errors import InvalidParameter, NotFound, TooManyRequests
from geoservice.halls.domain import normalise_code
from geoservice.settings import Settings

DictConn = AsyncConnection[dict[str, Any]]

#: ids in paths: printable, bounded (NUL bytes and controls are refused with 422)
ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,200}$"
HallId = Annotated[str, Path(pattern=ID_PATTERN, description="the hall's facility id")]
WindowId = Annotated[str, Path(pattern=ID_PATTERN, description="the window id")]
CodePath = Annotated[str, Path(max_length=64, description="the booking or case code")]
TicketId = Annotated[int, Path(ge=1, le=2**62, description="the ticket id")]


@dataclass(frozen=True)
class Hall:
    """A hall's set-up as the routes need it."""

    id: str
    name: str
    name_en: str | None
    address: str | None
    slot_minutes: int
    days_ahead: int
    hours: str | None
    status: str


_HALL = """
SELECT h.facility_id AS id, f.name, f.name_en, f.address, f.status, h.slot_minutes,
       h.booking_days_ahead, coalesce(h.hours, f.opening_hours) AS hours
  FROM halls h JOIN facilities f ON f.id = h.facility_id
 WHERE h.facility_id = %s
"""
_HALL_MATTER = """
SELECT m.capacity, m.queue_group, t.title, t.title_en,
       (SELECT count(*) FROM hall_window_matters w
         WHERE w.hall_id = m.hall_id AND w.matter_id = m.matter_id) AS windows
  FROM hall_matters m JOIN matters t ON t.id = m.matter_id
 WHERE m.hall_id = %s AND m.matter_id = %s
"""
_HALL_MATTER_IDS = "SELECT matter_id FROM hall_matters WHERE hall_id = %s ORDER BY matter_id"


async def get_hall(conn: DictConn, hall_id: str, *, field: str | None = None) -> Hall:
    """The hall's set-up; 404 (or 422 naming the body field) when there is none."""
    row = await (await conn.execute(_HALL, (hall_id,))).fetchone()
    if row is None:
        message = f"no service hall with id {hall_id!r} (GET /api/v1/halls lists them)"
        raise InvalidParameter(f"body field '{field}': {message}") if field else NotFound(message)
    return Hall(
        row["id"], row["name"], row["name_en"], row["address"], int(row["slot_minutes"]),
        int(row["booking_days_ahead"]), row["hours"], row["status"],
    )  # fmt: skip


async def hall_matter(conn: DictConn, hall: Hall, matter_id: str, field: str) -> dict[str, Any]:
    """The hall's matter (capacity, queue group, windows), or 422 naming the matters handled."""
    row = await (await conn.execute(_HALL_MATTER, (hall.id, matter_id))).fetchone()
    if row is None:
        handled = [
            r["matter_id"]
            for r in await (await conn.execute(_HALL_MATTER_IDS, (hall.id,))).fetchall()
        ]
        raise InvalidParameter(
            f"{field}: hall {hall.id!r} does not handle matter {matter_id[:200]!r};"
            f" it handles: {', '.join(handled)}"
        )
    return dict(row)


#: seconds a hall's set-up stays cached for bookings (a reload is seen within this)
SETUP_CACHE_S = 5.0


async def booking_setup(
    request: Request, conn: DictConn, hall_id: str, matter_id: str
) -> tuple[Hall, dict[str, Any]]:
    """(hall, its matter) for a booking, cached per process for a few seconds: the booking
    path is then a single statement (422 naming the body field when either is unknown)."""
    cache: dict[tuple[str, str], tuple[float, Hall, dict[str, Any]]] | None = getattr(
        request.app.state, "hall_setups", None
    )
    if cache is None:
        cache = request.app.state.hall_setups = {}
    now = time.monotonic()
    hit = cache.get((hall_id, matter_id))
    if hit is not None and hit[0] > now:
        return hit[1], hit[2]
    hall = await get_hall(conn, hall_id, field="hall")
    matter = await hall_matter(conn, hall, matter_id, "body field 'matter'")
    if len(cache) >= 10_000:
        cache.clear()
    cache[(hall_id, matter_id)] = (now + SETUP_CACHE_S, hall, matter)
    return hall, matter


def code_or_404(code: str, what: str = "appointment") -> str:
    """The canonical code, or 404 (an impossible code is simply unknown)."""
    found = normalise_code(code)
    if found is None:
        raise NotFound(f"no {what} with that code")
    return found


def now_in(settings: Settings) -> datetime:
    """Now in the district's time zone."""
    return datetime.now(ZoneInfo(settings.district.timezone))


def client_hash(request: Request, settings: Settings) -> str:
    """A salted hash of the client's network address (never the address itself)."""
    ip = request.client.host if request.client else "unknown"
    return hashlib.sha256(f"{settings.service.client_salt}\0hall\0{ip}".encode()).hexdigest()


#: most network addresses counted per process (the table is cleared when full)
MAX_CLIENTS_TRACKED = 100_000


def check_address_bound(request: Request, client: str, settings: Settings) -> None:
    """429 when this network address booked or took tickets too often this hour.

    Counted in memory per process (fixed one-hour windows): a database count per request grew
    with the hour's bookings from one address and serialised them. With N worker processes an
    address gets at most N times the bound, still a bound.
    """
    counts: dict[str, tuple[int, int]] | None = getattr(request.app.state, "hall_clients", None)
    if counts is None:
        counts = request.app.state.hall_clients = {}
    now = time.time()
    window = int(now // 3600)
    seen_window, seen = counts.get(client, (window, 0))
    if seen_window != window:
        seen = 0
    limit = settings.halls.max_per_address_per_hour
    if seen >= limit:
        raise TooManyRequests(
            f"at most {limit} bookings and tickets per network address per hour",
            retry_after=math.ceil((window + 1) * 3600 - now),
        )
    if len(counts) >= MAX_CLIENTS_TRACKED:
        counts.clear()
    counts[client] = (window, seen + 1)


# --- the signed-in resident's own cases -------------------------------------------------------

#: who is signed in: the id of the resident whose live session a request carries, or None
ResidentOf = Callable[[Request], Awaitable[int | None]]

#: a case of the signed-in resident: on /me, its progress in their feed (the case events'
#: trigger fans out to the residents linked when the event is written, so link first)
LINK_RESIDENT = """
INSERT INTO resident_cases (resident_id, case_id) VALUES (%(resident)s, %(case)s)
ON CONFLICT DO NOTHING
"""


async def signed_in_resident(request: Request) -> int | None:
    """The resident booking or taking a ticket, when signed in (bearer token or session
    cookie); None otherwise — signing in is never required to book.

    The residents' session check is theirs (geoservice.residents): the app factory hands it
    over as ``app.state.resident_of``, since the two capabilities do not import each other.
    """
    resident_of: ResidentOf | None = getattr(request.app.state, "resident_of", None)
    return None if resident_of is None else await resident_of(request)


async def link_resident(conn: DictConn, resident: int | None, case_id: int) -> None:
    """Keep `case_id` as the resident's (nothing without a resident; idempotent)."""
    if resident is not None:
        await conn.execute(LINK_RESIDENT, {"resident": resident, "case": case_id})


# --- live load ------------------------------------------------------------------------------

#: typical minutes at the window per (hall, matter): mean of the last 20 finished tickets of
#: the last 30 days, when there are at least 3; else the hall's slot length
SERVICE_MINUTES = """
svc AS (
    SELECT hall_id, matter_id, avg(extract(epoch FROM finished_at - called_at)) / 60 AS minutes,
           count(*) AS n
      FROM (SELECT hall_id, matter_id, finished_at, called_at,
                   row_number() OVER (PARTITION BY hall_id, matter_id
                                      ORDER BY finished_at DESC) AS rn
              FROM hall_tickets
             WHERE outcome IS NOT NULL AND called_at IS NOT NULL
               AND finished_at > now() - interval '30 days'
               AND (%(hall)s::text IS NULL OR hall_id = %(hall)s)) t
     WHERE rn <= 20
     GROUP BY hall_id, matter_id
     HAVING count(*) >= 3
)
"""

#: every hall (or one) with waiting, serving and the work waiting in minutes
LOAD = (
    "WITH "
    + SERVICE_MINUTES
    + """
, open AS (
    SELECT hall_id, matter_id, status FROM hall_tickets
     WHERE status IN ('waiting', 'called') AND day = %(today)s
       AND (%(hall)s::text IS NULL OR hall_id = %(hall)s)
)
SELECT h.facility_id AS id, f.name, f.name_en, f.address, f.status,
       ST_X(f.geom) AS lon, ST_Y(f.geom) AS lat,
       coalesce(h.hours, f.opening_hours) AS hours, h.slot_minutes,
       count(o.status) FILTER (WHERE o.status = 'waiting') AS waiting,
       count(o.status) FILTER (WHERE o.status = 'called') AS serving,
       coalesce(sum(coalesce(svc.minutes, h.slot_minutes))
                FILTER (WHERE o.status = 'waiting'), 0) AS work_min,
       (SELECT count(*) FROM hall_windows w WHERE w.hall_id = h.facility_id) AS windows
  FROM halls h
  JOIN facilities f ON f.id = h.facility_id
  LEFT JOIN open o ON o.hall_id = h.facility_id
  LEFT JOIN svc ON svc.hall_id = o.hall_id AND svc.matter_id = o.matter_id
 WHERE (%(hall)s::text IS NULL OR h.facility_id = %(hall)s)
 GROUP BY h.facility_id, f.name, f.name_en, f.address, f.status, f.geom, f.opening_hours
 ORDER BY f.name, h.facility_id
"""
)


def load_of(row: dict[str, Any]) -> dict[str, Any]:
    """waiting, serving and estimated_wait_min of a LOAD row."""
    windows = max(1, int(row["windows"]))
    return {
        "waiting": int(row["waiting"]),
        "serving": int(row["serving"]),
        "estimated_wait_min": math.ceil(float(row["work_min"]) / windows),
    }


async def hall_loads(
    conn: DictConn, settings: Settings, hall_id: str | None = None
) -> list[dict[str, Any]]:
    """LOAD rows for every hall (or one)."""
    params = {"hall": hall_id, "today": now_in(settings).date()}
    return list(await (await conn.execute(LOAD, params)).fetchall())


#: how a waiting ticket ranks: due appointments first (by slot), walk-ins by arrival,
#: appointments checked in early once their slot is due (after walk-ins until then)
RANK = """
(CASE WHEN {t}.due_at IS NOT NULL AND {t}.due_at <= now() THEN 0
      WHEN {t}.due_at IS NULL THEN 1 ELSE 2 END), coalesce({t}.due_at, {t}.issued_at), {t}.id
"""

#: a ticket's position (1 = next) in its queue group, and the minutes estimated until its call
POSITION = (
    "WITH "
    + SERVICE_MINUTES
    + """
SELECT t.id, t.number, t.status, t.window_id, t.matter_id, t.queue_group, t.issued_at,
       t.called_at, t.finished_at, t.outcome, t.due_at,
       (SELECT count(*) FROM hall_tickets o
         WHERE o.hall_id = t.hall_id AND o.day = t.day AND o.queue_group = t.queue_group
           AND o.status = 'waiting' AND ({o_rank}) < ({t_rank})) + 1 AS position,
       coalesce((SELECT minutes FROM svc WHERE svc.hall_id = t.hall_id
                  AND svc.matter_id = t.matter_id), h.slot_minutes) AS service_min,
       (SELECT count(*) FROM hall_window_matters w
         WHERE w.hall_id = t.hall_id AND w.matter_id = t.matter_id) AS windows
  FROM hall_tickets t JOIN halls h ON h.facility_id = t.hall_id
 WHERE t.{key} = %(key)s AND (%(hall)s::text IS NULL OR t.hall_id = %(hall)s)
""".replace("{o_rank}", RANK.format(t="o")).replace("{t_rank}", RANK.format(t="t"))
)
TICKET_BY_ID = POSITION.replace("{key}", "id")
TICKET_BY_CASE = POSITION.replace("{key}", "case_id")
