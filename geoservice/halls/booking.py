"""Appointments: book a slot, look it up by its code, cancel, reschedule, add it to a calendar.

Never more bookings than capacity, whatever the concurrency: a booking is one statement,
``INSERT INTO hall_slots … ON CONFLICT DO UPDATE SET booked = booked + 1 WHERE booked <
capacity``, so the database serialises a slot's bookings on its row lock and an attempt on a
full slot changes nothing (409); the CHECK ``booked <= capacity`` refuses anything else. The
same statement inserts the case, whose partial unique index allows one booking per phone per
matter per day (409 too). The application never counts bookings to decide.

Personal data: a name and a mobile number, shown in full only to whoever holds the code (these
routes); everywhere else masked (138****1234); erased ``retention_days`` after the case ends.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, Query, Request, Response
from icalendar import Calendar, Event
from pydantic import BaseModel, ConfigDict, Field, field_validator

from geoservice.api.deps import PoolDep, PrimaryPoolDep, SettingsDep
from geoservice.api.errors import Conflict, InvalidParameter, NotFound, TooManyRequests
from geoservice.api.features import json_response
from geoservice.halls.common import (
    TICKET_BY_CASE,
    CodePath,
    DictConn,
    Hall,
    HallId,
    booking_setup,
    check_address_bound,
    client_hash,
    code_or_404,
    get_hall,
    hall_matter,
    now_in,
    signed_in_resident,
)
from geoservice.halls.domain import (
    OffGrid,
    Slot,
    bookable_days,
    check_start,
    clean_name,
    estimate_minutes,
    mask_name,
    mask_phone,
    new_code,
    normalise_phone,
    slot_grid,
)
from geoservice.halls.setup import LAPSE
from geoservice.settings import Settings

router = APIRouter(tags=["service halls"])

Id = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


def parse_start(value: str, field: str = "start") -> datetime:
    """An RFC 3339 date-time with its offset, or 422 naming the field."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidParameter(
            f"body field '{field}': {value[:40]!r} is not an RFC 3339 date-time"
            " (e.g. 2026-01-05T09:00:00+08:00)"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidParameter(f"body field '{field}': must carry a time zone offset (e.g. +08:00)")
    return parsed


class BookingIn(BaseModel):
    """A booking request."""

    model_config = ConfigDict(extra="forbid")

    hall: Id
    matter: Id
    start: Annotated[str, Field(min_length=10, max_length=40)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    phone: Annotated[str, Field(min_length=5, max_length=40)]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return clean_name(value)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalise_phone(value)


class RescheduleIn(BaseModel):
    """A new start for a booking."""

    model_config = ConfigDict(extra="forbid")

    start: Annotated[str, Field(min_length=10, max_length=40)]


class AppointmentOut(BaseModel):
    """An appointment as the contract names it (name and phone only for the code's holder)."""

    id: int
    code: str
    hall: str
    matter: str
    start: str
    end: str
    status: str
    name: str | None = None
    phone: str | None = None
    hall_name: str | None = None
    matter_title: str | None = None
    ticket: dict[str, Any] | None = None
    check_in_from: str | None = None
    lapses_at: str | None = None


class SlotOut(BaseModel):
    """One slot of a day."""

    start: str
    end: str
    capacity: int
    booked: int
    free: int


def _slot(hall: Hall, start: datetime, settings: Settings, now: datetime) -> Slot:
    if not hall.hours:
        raise Conflict(f"hall {hall.id!r} has no opening hours: nothing can be booked")
    if hall.status != "active":
        raise Conflict(f"hall {hall.id!r} is {hall.status.replace('_', ' ')}: no bookings")
    try:
        return check_start(
            start, hours=hall.hours, slot_minutes=hall.slot_minutes, days_ahead=hall.days_ahead,
            timezone=settings.district.timezone, now=now,
        )  # fmt: skip
    except OffGrid as exc:
        raise InvalidParameter(f"body field 'start': {exc}") from None


# One statement, so one round trip and no lock held between round trips: the phone's open
# bookings (under the bound?), then a place in the slot (row-locked; nothing when full), then
# the case, its event and, for a signed-in resident, the case kept as theirs (the event's
# statement trigger runs after the whole statement, so it sees the link and feeds them).
# `active` tells a refused phone from a full slot.
_BOOK = """
WITH phone AS (
    SELECT count(*) AS active FROM hall_cases
     WHERE phone = %(phone)s AND status IN ('booked', 'checked_in', 'called')
), slot AS (
    INSERT INTO hall_slots AS s (hall_id, matter_id, starts_at, ends_at, capacity, booked)
    SELECT %(hall)s, %(matter)s, %(start)s, %(end)s, %(capacity)s, 1
      FROM phone WHERE phone.active < %(phone_limit)s
    ON CONFLICT (hall_id, matter_id, starts_at)
    DO UPDATE SET booked = s.booked + 1 WHERE s.booked < s.capacity
    RETURNING s.id, s.starts_at, s.ends_at
), c AS (
    INSERT INTO hall_cases (code, hall_id, matter_id, kind, slot_id, starts_at, ends_at, day,
                            name, phone, status, client_hash)
    SELECT %(code)s, %(hall)s, %(matter)s, 'appointment', slot.id, slot.starts_at, slot.ends_at,
           %(day)s, %(name)s, %(phone)s, 'booked', %(client)s
      FROM slot
    RETURNING id, code, starts_at, ends_at
), e AS (
    INSERT INTO hall_case_events (case_id, status) SELECT id, 'booked' FROM c
), r AS (
    INSERT INTO resident_cases (resident_id, case_id)
    SELECT %(resident)s::bigint, id FROM c WHERE %(resident)s::bigint IS NOT NULL
)
SELECT phone.active, c.id, c.code, c.starts_at, c.ends_at FROM phone LEFT JOIN c ON true
"""


async def _take_place(
    conn: DictConn, params: dict[str, Any], hall: Hall, matter: str, start: datetime
) -> dict[str, Any]:
    """Run _BOOK: 429 for a phone at its bound, 409 for a full slot or a second booking of the
    phone for that matter and day."""
    try:
        row = await (await conn.execute(_BOOK, params, prepare=True)).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        constraint = exc.diag.constraint_name or ""
        if constraint == "hall_cases_phone_day_key":
            raise Conflict(
                f"this phone already holds a booking for matter {matter!r} on {params['day']};"
                " cancel or reschedule it instead"
            ) from None
        raise  # a code collision (about 1 in 2⁴⁹): the caller retries with a new code
    except psycopg.errors.CheckViolation:
        row = None
    if row is not None and row["id"] is None and int(row["active"]) >= params["phone_limit"]:
        raise TooManyRequests(
            f"this phone holds {params['phone_limit']} open bookings already (the most"
            " allowed); cancel one first",
            retry_after=3600,
        )
    if row is None or row["id"] is None:
        raise Conflict(
            f"the slot {start.isoformat()} for matter {matter!r} at hall {hall.id!r} is full;"
            f" GET /api/v1/halls/{hall.id}/slots?matter={matter}&date={params['day']} shows free ones"
        )
    return dict(row)


@router.post(
    "/api/v1/appointments",
    status_code=201,
    response_model=AppointmentOut,
    response_model_exclude_none=True,
    summary="Book a slot at a hall for a matter",
    responses={
        409: {"description": "slot full, or this phone already booked this matter that day"},
        422: {"description": "a field is invalid: start off the grid, past, too far ahead"},
        429: {"description": "too many bookings from this phone or network address"},
    },
)
async def book(
    booking: BookingIn, request: Request, pool: PoolDep, settings: SettingsDep
) -> Response:
    """Book: 201 with the secret code; 409 when full or already booked. A signed-in
    resident's booking is kept as theirs (on /me, its progress in their feed)."""
    start = parse_start(booking.start)
    client = client_hash(request, settings)
    resident = await signed_in_resident(request)
    async with pool.connection() as conn:
        hall, matter = await booking_setup(request, conn, booking.hall, booking.matter)
        slot = _slot(hall, start, settings, now_in(settings))
        check_address_bound(request, client, settings)
        params = {
            "hall": hall.id, "matter": booking.matter, "start": slot.start, "end": slot.end,
            "capacity": int(matter["capacity"]), "day": slot.start.date(), "name": booking.name,
            "phone": booking.phone, "client": client,
            "phone_limit": settings.halls.max_bookings_per_phone, "resident": resident,
        }  # fmt: skip
        for _ in range(3):
            params["code"] = new_code()
            try:
                row = await _take_place(conn, params, hall, booking.matter, slot.start)
                break
            except psycopg.errors.UniqueViolation:
                continue
        else:  # pragma: no cover - three code collisions in a row
            raise Conflict("could not allocate a booking code; try again")
    # the hot path: serialised once with orjson, not validated again against the model
    return json_response(
        {"id": int(row["id"]), "code": row["code"], "hall": hall.id, "matter": booking.matter,
         "start": _iso(row["starts_at"], settings), "end": _iso(row["ends_at"], settings),
         "status": "booked", "name": booking.name, "phone": booking.phone,
         "hall_name": hall.name, "matter_title": matter["title"]},
        status_code=201,
    )  # fmt: skip


def _iso(value: datetime, settings: Settings) -> str:
    return value.astimezone(ZoneInfo(settings.district.timezone)).isoformat()


_CASE = """
SELECT c.id, c.code, c.kind, c.hall_id, c.matter_id, c.starts_at, c.ends_at, c.day, c.name,
       c.phone, c.status, c.created_at, c.ended_at, c.slot_id,
       f.name AS hall_name, f.name_en AS hall_name_en, f.address AS hall_address,
       m.title AS matter_title, m.title_en AS matter_title_en
  FROM hall_cases c
  JOIN facilities f ON f.id = c.hall_id
  JOIN matters m ON m.id = c.matter_id
 WHERE c.code = %s
"""


async def case_by_code(conn: DictConn, code: str, settings: Settings) -> dict[str, Any]:
    """The case holding this code (overdue bookings lapsed first), or 404."""
    await conn.execute(LAPSE, {"lapse": settings.halls.lapse_after_min})
    row = await (await conn.execute(_CASE, (code,))).fetchone()
    if row is None:
        raise NotFound("no appointment or case with that code")
    return dict(row)


async def ticket_of(conn: DictConn, case_id: int) -> dict[str, Any] | None:
    """The case's queue ticket with its live position, or None before check-in."""
    row = await (await conn.execute(TICKET_BY_CASE, {"key": case_id, "hall": None})).fetchone()
    return ticket_out(dict(row)) if row is not None else None


def ticket_out(row: dict[str, Any]) -> dict[str, Any]:
    """A ticket as the API shows it: number, status, position and wait while waiting."""
    waiting = row["status"] == "waiting"
    position = int(row["position"]) if waiting else 0
    return {
        "id": int(row["id"]),
        "number": row["number"],
        "status": row["status"],
        "window": row["window_id"],
        "position": position,
        "estimated_wait_min": estimate_minutes(
            position, float(row["service_min"]), int(row["windows"])
        )
        if waiting
        else 0,
        "issued_at": row["issued_at"].isoformat(),
        "called_at": row["called_at"].isoformat() if row["called_at"] else None,
        "outcome": row["outcome"],
    }


def appointment_out(
    case: dict[str, Any], settings: Settings, ticket: dict[str, Any] | None, *, full: bool
) -> AppointmentOut:
    """The appointment; `full` shows name and phone (only to the code's holder)."""
    starts, ends = case["starts_at"], case["ends_at"]
    halls = settings.halls
    return AppointmentOut(
        id=int(case["id"]), code=case["code"], hall=case["hall_id"], matter=case["matter_id"],
        start=_iso(starts, settings) if starts else "", end=_iso(ends, settings) if ends else "",
        status=case["status"],
        name=case["name"] if full else mask_name(case["name"]),
        phone=case["phone"] if full else mask_phone(case["phone"]),
        hall_name=case["hall_name"], matter_title=case["matter_title"], ticket=ticket,
        check_in_from=_iso(starts - timedelta(minutes=halls.check_in_before_min), settings)
        if starts else None,
        lapses_at=_iso(starts + timedelta(minutes=halls.lapse_after_min), settings)
        if starts else None,
    )  # fmt: skip


@router.get(
    "/api/v1/appointments/{code}",
    response_model=AppointmentOut,
    response_model_exclude_none=True,
    summary="The appointment held by this code (with name and phone: the code is the key)",
)
async def get_appointment(
    code: CodePath, pool: PrimaryPoolDep, settings: SettingsDep
) -> AppointmentOut:
    """The appointment, its status and, once checked in, its queue ticket."""
    # on the primary: reading a case lapses overdue bookings first (a GET that writes)
    key = code_or_404(code)
    async with pool.connection() as conn:
        case = await case_by_code(conn, key, settings)
        ticket = await ticket_of(conn, int(case["id"]))
    return appointment_out(case, settings, ticket, full=True)


_CANCEL = """
WITH c AS (
    UPDATE hall_cases SET status = 'cancelled', ended_at = now(), updated_at = now()
     WHERE code = %s AND status = 'booked' AND kind = 'appointment'
    RETURNING id, slot_id
), s AS (
    UPDATE hall_slots SET booked = booked - 1 WHERE id IN (SELECT slot_id FROM c)
), e AS (
    INSERT INTO hall_case_events (case_id, status) SELECT id, 'cancelled' FROM c
)
SELECT id FROM c
"""


@router.delete(
    "/api/v1/appointments/{code}",
    response_model=AppointmentOut,
    response_model_exclude_none=True,
    summary="Cancel a booking (frees its place in the slot)",
    responses={409: {"description": "no longer a booking (checked in, ended, lapsed)"}},
)
async def cancel(code: CodePath, pool: PoolDep, settings: SettingsDep) -> AppointmentOut:
    """Cancel: the slot's place is free again at once."""
    key = code_or_404(code)
    async with pool.connection() as conn:
        case = await case_by_code(conn, key, settings)
        async with conn.transaction():
            done = await (await conn.execute(_CANCEL, (key,))).fetchone()
        if done is None:
            raise Conflict(f"this appointment is {case['status']}; only a booking can be cancelled")
        case = await case_by_code(conn, key, settings)
    return appointment_out(case, settings, None, full=True)


_LOCK_CASE = "SELECT id, slot_id FROM hall_cases WHERE code = %s AND status = 'booked' FOR UPDATE"
_MOVE = """
WITH slot AS (
    INSERT INTO hall_slots AS s (hall_id, matter_id, starts_at, ends_at, capacity, booked)
    VALUES (%(hall)s, %(matter)s, %(start)s, %(end)s, %(capacity)s, 1)
    ON CONFLICT (hall_id, matter_id, starts_at)
    DO UPDATE SET booked = s.booked + 1 WHERE s.booked < s.capacity
    RETURNING s.id, s.starts_at, s.ends_at
), c AS (
    UPDATE hall_cases c SET slot_id = slot.id, starts_at = slot.starts_at, ends_at = slot.ends_at,
                            day = %(day)s, updated_at = now()
      FROM slot WHERE c.id = %(case)s
    RETURNING c.id
), e AS (
    INSERT INTO hall_case_events (case_id, status, detail)
    SELECT id, 'booked', 'rescheduled from ' || %(old)s FROM c
)
SELECT id FROM c
"""
_RELEASE = "UPDATE hall_slots SET booked = booked - 1 WHERE id = %s"


@router.patch(
    "/api/v1/appointments/{code}",
    response_model=AppointmentOut,
    response_model_exclude_none=True,
    summary="Reschedule a booking to another slot of the same hall and matter",
    responses={409: {"description": "the new slot is full, or no longer a booking"}},
)
async def reschedule(
    code: CodePath, change: RescheduleIn, pool: PoolDep, settings: SettingsDep
) -> AppointmentOut:
    """Move the booking atomically: the old place is freed only if the new one is taken."""
    key = code_or_404(code)
    start = parse_start(change.start)
    async with pool.connection() as conn:
        case = await case_by_code(conn, key, settings)
        hall = await get_hall(conn, case["hall_id"])
        matter = await hall_matter(conn, hall, case["matter_id"], "matter")
        slot = _slot(hall, start, settings, now_in(settings))
        if case["starts_at"] == slot.start:
            return appointment_out(case, settings, None, full=True)
        async with conn.transaction():
            locked = await (await conn.execute(_LOCK_CASE, (key,))).fetchone()
            if locked is None:
                raise Conflict(
                    f"this appointment is {case['status']}; only a booking can be rescheduled"
                )
            params = {
                "hall": hall.id, "matter": case["matter_id"], "start": slot.start,
                "end": slot.end, "capacity": int(matter["capacity"]), "day": slot.start.date(),
                "case": int(locked["id"]), "old": _iso(case["starts_at"], settings),
            }  # fmt: skip
            try:
                moved = await (await conn.execute(_MOVE, params)).fetchone()
            except psycopg.errors.UniqueViolation:
                raise Conflict(
                    f"this phone already holds a booking for this matter on {slot.start.date()}"
                ) from None
            except psycopg.errors.CheckViolation:
                moved = None
            if moved is None:
                raise Conflict(f"the slot {slot.start.isoformat()} is full")
            if locked["slot_id"] is not None:
                await conn.execute(_RELEASE, (locked["slot_id"],))
        case = await case_by_code(conn, key, settings)
    return appointment_out(case, settings, None, full=True)


@router.get(
    "/api/v1/appointments/{code}/calendar.ics",
    response_class=Response,
    summary="The appointment as an iCalendar event (RFC 5545)",
    responses={200: {"content": {"text/calendar": {}}}},
)
async def calendar(code: CodePath, pool: PrimaryPoolDep, settings: SettingsDep) -> Response:
    """An RFC 5545 calendar holding the one event."""
    key = code_or_404(code)
    async with pool.connection() as conn:
        case = await case_by_code(conn, key, settings)
    if case["starts_at"] is None:
        raise NotFound("this case is a walk-in ticket: it has no appointment time")
    return Response(
        ics(case, settings), media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="appointment-{key}.ics"'},
    )  # fmt: skip


def ics(case: dict[str, Any], settings: Settings) -> bytes:
    """The appointment as an RFC 5545 VCALENDAR with one VEVENT."""
    cal = Calendar()
    cal.add("prodid", "-//servicemap//service halls//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    event = Event()
    host = settings.service.public_url.split("//", 1)[-1].split("/", 1)[0] or "servicemap"
    event.add("uid", f"appointment-{case['id']}@{host}")
    event.add("dtstamp", datetime.now(ZoneInfo("UTC")))
    event.add("dtstart", case["starts_at"].astimezone(ZoneInfo(settings.district.timezone)))
    event.add("dtend", case["ends_at"].astimezone(ZoneInfo(settings.district.timezone)))
    event.add("summary", f"{case['matter_title']} · {case['hall_name']}")
    if case["hall_address"]:
        event.add("location", f"{case['hall_name']}, {case['hall_address']}")
    url = f"{settings.service.public_url}/appointments/{case['code']}"
    event.add(
        "description",
        f"预约码 / Booking code: {case['code']}\n"
        f"签到 / Check in from {settings.halls.check_in_before_min} min before.\n{url}",
    )
    event.add("url", url)
    event.add("status", "CANCELLED" if case["status"] == "cancelled" else "CONFIRMED")
    cal.add_component(event)
    data: bytes = cal.to_ical()
    return data


# --- the slot grid of a day -----------------------------------------------------------------

_SLOTS_OF_DAY = """
SELECT starts_at, capacity, booked FROM hall_slots
 WHERE hall_id = %s AND matter_id = %s AND starts_at >= %s AND starts_at < %s
"""


@router.get(
    "/api/v1/halls/{hall_id}/slots",
    response_model=list[SlotOut],
    summary="A day's slots for a matter, with capacity and free places",
)
async def slots(
    hall_id: HallId,
    pool: PoolDep,
    settings: SettingsDep,
    matter: Annotated[str, Query(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")],
    day: Annotated[
        str | None,
        Query(alias="date", max_length=10, description="YYYY-MM-DD (default today)"),
    ] = None,
) -> list[SlotOut]:
    """Every slot of the day: past slots and full ones show free 0."""
    async with pool.connection() as conn:
        hall = await get_hall(conn, hall_id)
        found = await hall_matter(conn, hall, matter, "query parameter 'matter'")
        now = now_in(settings)
        first, last = bookable_days(hall.days_ahead, settings.district.timezone, now)
        wanted = _parse_day(day, first, last)
        grid = slot_grid(hall.hours or "", hall.slot_minutes, wanted, settings.district.timezone)
        if not grid:
            return []
        rows = await (
            await conn.execute(_SLOTS_OF_DAY, (hall.id, matter, grid[0].start, grid[-1].end))
        ).fetchall()
    stored = {r["starts_at"]: r for r in rows}
    out = []
    for slot in grid:
        row = stored.get(slot.start)
        capacity = int(row["capacity"]) if row else int(found["capacity"])
        booked = int(row["booked"]) if row else 0
        free = 0 if slot.start <= now else max(0, capacity - booked)
        out.append(
            SlotOut(start=slot.start.isoformat(), end=slot.end.isoformat(), capacity=capacity,
                    booked=booked, free=free)
        )  # fmt: skip
    return out


def _parse_day(value: str | None, first: date, last: date) -> date:
    if value is None:
        return first
    try:
        wanted = date.fromisoformat(value)
    except ValueError:
        raise InvalidParameter(
            f"query parameter 'date': {value!r} is not a date YYYY-MM-DD"
        ) from None
    if not first <= wanted <= last:
        raise InvalidParameter(
            f"query parameter 'date': {wanted} is outside the booking horizon {first} … {last}"
        )
    return wanted
