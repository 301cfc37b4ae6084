"""Halls with their live load, queue tickets (取號), and the staff window (叫號).

Numbers are per matter group and day (A001, A002 … B001), from a counter row raised with
``INSERT … ON CONFLICT DO UPDATE`` (row-locked: no number is given twice). A window calls the
next ticket of the matters it serves: checked-in appointments whose slot has begun first (by
slot), then walk-ins in arrival order, then appointments checked in early; the pick is
``FOR UPDATE SKIP LOCKED``, so two windows never call the same ticket.

The estimated wait is the work waiting (each waiting ticket counted at its matter's typical
service time: the mean of the last 20 finished tickets of that matter in that hall within 30
days, or the slot length while there are fewer than 3) shared over the windows.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from geoservice.api.auth import StaffDep
from geoservice.api.deps import PoolDep, SettingsDep
from geoservice.api.errors import Conflict, InvalidParameter, NotFound
from geoservice.halls.booking import case_by_code, ticket_out
from geoservice.halls.common import (
    ID_PATTERN,
    RANK,
    TICKET_BY_ID,
    DictConn,
    Hall,
    HallId,
    TicketId,
    WindowId,
    check_address_bound,
    client_hash,
    get_hall,
    hall_loads,
    hall_matter,
    link_resident,
    load_of,
    now_in,
    signed_in_resident,
)
from geoservice.halls.domain import OUTCOMES, mask_name, new_code, normalise_code
from geoservice.settings import Settings
from layers.hours import open_now

router = APIRouter(tags=["service halls"])
staff_router = APIRouter(tags=["service halls (staff)"])

Id = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class HallLoad(BaseModel):
    """A hall and its live load."""

    id: str
    name: str
    name_en: str | None
    address: str | None
    lon: float
    lat: float
    open_now: bool | None
    waiting: int
    serving: int
    estimated_wait_min: int
    url: str


def _hall_load(row: dict[str, Any], settings: Settings) -> HallLoad:
    return HallLoad(
        id=row["id"], name=row["name"], name_en=row["name_en"], address=row["address"],
        lon=float(row["lon"]), lat=float(row["lat"]),
        open_now=open_now(row["hours"], settings.district.timezone), url=f"/halls/{row['id']}",
        **load_of(row),
    )  # fmt: skip


@router.get(
    "/api/v1/halls",
    response_model=list[HallLoad],
    summary="Every hall with its live load (waiting, serving, estimated wait)",
)
async def list_halls(pool: PoolDep, settings: SettingsDep) -> list[HallLoad]:
    """The halls with a service set-up, each with its queue now."""
    async with pool.connection() as conn:
        rows = await hall_loads(conn, settings)
    return [_hall_load(r, settings) for r in rows]


_WINDOWS = """
SELECT w.id, w.name, array_agg(m.matter_id ORDER BY m.matter_id) AS matters
  FROM hall_windows w JOIN hall_window_matters m ON m.hall_id = w.hall_id AND m.window_id = w.id
 WHERE w.hall_id = %s
 GROUP BY w.id, w.name, w.position ORDER BY w.position
"""
_MATTERS = """
SELECT hm.matter_id AS id, t.title, t.title_en, t.domain, t.department, hm.capacity,
       hm.queue_group,
       coalesce((SELECT jsonb_agg(jsonb_build_object('id', d.id, 'title', d.title,
                                                     'title_en', d.title_en, 'url', d.url,
                                                     'published_at', d.published_at)
                                  ORDER BY d.published_at DESC NULLS LAST, d.id)
                   FROM document_matters dm JOIN documents d ON d.id = dm.document_id
                  WHERE dm.matter_id = hm.matter_id AND d.category = 'service'),
                '[]'::jsonb) AS guides
  FROM hall_matters hm JOIN matters t ON t.id = hm.matter_id
 WHERE hm.hall_id = %s
 ORDER BY hm.queue_group, hm.matter_id
"""


async def hall_detail(conn: DictConn, hall_id: str, settings: Settings) -> dict[str, Any]:
    """A hall's windows, matters (with service guides), hours and live load."""
    hall = await get_hall(conn, hall_id)
    rows = await hall_loads(conn, settings, hall.id)
    windows = await (await conn.execute(_WINDOWS, (hall.id,))).fetchall()
    matters = await (await conn.execute(_MATTERS, (hall.id,))).fetchall()
    load = _hall_load(rows[0], settings)
    return {
        **load.model_dump(),
        "hours": hall.hours,
        "slot_minutes": hall.slot_minutes,
        "booking_days_ahead": hall.days_ahead,
        "windows": [dict(w) for w in windows],
        "matters": [dict(m) for m in matters],
        "facility_url": f"/facilities/{hall.id}",
    }


@router.get("/api/v1/halls/{hall_id}", summary="A hall: windows, matters with guides, hours, load")
async def get_hall_detail(hall_id: HallId, pool: PoolDep, settings: SettingsDep) -> dict[str, Any]:
    """The hall's set-up and live load."""
    async with pool.connection() as conn:
        return await hall_detail(conn, hall_id, settings)


# --- the queue ------------------------------------------------------------------------------

_NOW_SERVING = """
SELECT DISTINCT ON (window_id) window_id AS window, number, called_at
  FROM hall_tickets
 WHERE hall_id = %s AND day = %s AND status = 'called'
 ORDER BY window_id, called_at DESC
"""
_WAITING_BY_GROUP = """
SELECT queue_group, count(*) AS waiting FROM hall_tickets
 WHERE hall_id = %s AND day = %s AND status = 'waiting' GROUP BY queue_group ORDER BY 1
"""


async def queue_state(conn: DictConn, hall_id: str, settings: Settings) -> dict[str, Any]:
    """Now serving per window, waiting, estimated wait."""
    hall = await get_hall(conn, hall_id)
    today = now_in(settings).date()
    rows = await hall_loads(conn, settings, hall.id)
    serving = await (await conn.execute(_NOW_SERVING, (hall.id, today))).fetchall()
    groups = await (await conn.execute(_WAITING_BY_GROUP, (hall.id, today))).fetchall()
    load = load_of(rows[0])
    return {
        "hall": hall.id,
        "now_serving": [{"window": r["window"], "number": r["number"]} for r in serving],
        "waiting": load["waiting"],
        "serving": load["serving"],
        "estimated_wait_min": load["estimated_wait_min"],
        "waiting_by_group": {r["queue_group"]: int(r["waiting"]) for r in groups},
    }


@router.get("/api/v1/halls/{hall_id}/queue", summary="The hall's queue now")
async def get_queue(hall_id: HallId, pool: PoolDep, settings: SettingsDep) -> dict[str, Any]:
    """``{"now_serving": [{"window", "number"}], "waiting", "estimated_wait_min"}``."""
    async with pool.connection() as conn:
        return await queue_state(conn, hall_id, settings)


class TicketIn(BaseModel):
    """A walk-in (``matter``) or an appointment's check-in (``appointment``: its code)."""

    model_config = ConfigDict(extra="forbid")

    matter: Id | None = None
    appointment: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @model_validator(mode="after")
    def _one(self) -> TicketIn:
        if (self.matter is None) == (self.appointment is None):
            raise ValueError("give exactly one of 'matter' (walk-in) or 'appointment' (its code)")
        return self


# a number from the group's counter, the ticket, the case's new status and its event
_ISSUE = """
WITH n AS (
    INSERT INTO hall_ticket_counters AS k (hall_id, day, queue_group, last)
    VALUES (%(hall)s, %(day)s, %(group)s, 1)
    ON CONFLICT (hall_id, day, queue_group) DO UPDATE SET last = k.last + 1
    RETURNING last
), t AS (
    INSERT INTO hall_tickets (case_id, hall_id, matter_id, day, queue_group, seq, number, due_at)
    SELECT %(case)s, %(hall)s, %(matter)s, %(day)s, %(group)s, n.last,
           %(group)s || CASE WHEN n.last < 1000 THEN lpad(n.last::text, 3, '0')
                             ELSE n.last::text END,
           %(due)s
      FROM n
    RETURNING id, number
), c AS (
    UPDATE hall_cases SET status = 'checked_in', updated_at = now() WHERE id = %(case)s
), e AS (
    INSERT INTO hall_case_events (case_id, status, detail) SELECT %(case)s, 'checked_in', number FROM t
)
SELECT id, number FROM t
"""
_WALK_IN_CASE = """
INSERT INTO hall_cases (code, hall_id, matter_id, kind, day, status, client_hash)
VALUES (%s, %s, %s, 'walk_in', %s, 'checked_in', %s)
RETURNING id, code
"""
_LOCK_BOOKING = """
SELECT id, code, hall_id, matter_id, status, starts_at FROM hall_cases
 WHERE code = %s AND kind = 'appointment' FOR UPDATE
"""


@router.post(
    "/api/v1/halls/{hall_id}/tickets",
    status_code=201,
    summary="Take a queue number: walk-in {matter} or appointment check-in {appointment}",
    responses={
        409: {"description": "hall closed, too early or too late to check in, already checked in"}
    },
)
async def take_ticket(
    hall_id: HallId, ticket: TicketIn, request: Request, pool: PoolDep, settings: SettingsDep
) -> dict[str, Any]:
    """201 ``{"id", "number", "position", "estimated_wait_min", "code"}``. A signed-in
    resident's walk-in or checked-in appointment is kept as theirs (on /me, in their feed)."""
    resident = await signed_in_resident(request)
    async with pool.connection() as conn:
        hall = await get_hall(conn, hall_id)
        now = now_in(settings)
        if ticket.appointment is not None:
            issued = await _check_in(conn, hall, ticket.appointment, settings, resident)
        else:
            assert ticket.matter is not None
            matter = await hall_matter(conn, hall, ticket.matter, "body field 'matter'")
            if hall.status != "active" or open_now(hall.hours, settings.district.timezone) is False:
                raise Conflict(f"hall {hall.id!r} is closed now (hours: {hall.hours})")
            client = client_hash(request, settings)
            check_address_bound(request, client, settings)
            async with conn.transaction():
                case = await (
                    await conn.execute(
                        _WALK_IN_CASE, (new_code(), hall.id, ticket.matter, now.date(), client)
                    )
                ).fetchone()
                assert case is not None
                await link_resident(conn, resident, case["id"])
                params = {
                    "hall": hall.id, "day": now.date(), "group": matter["queue_group"],
                    "case": case["id"], "matter": ticket.matter, "due": None,
                }  # fmt: skip
                row = await (await conn.execute(_ISSUE, params)).fetchone()
                assert row is not None
            issued = {"id": row["id"], "code": case["code"]}
        found = await (
            await conn.execute(TICKET_BY_ID, {"key": issued["id"], "hall": hall.id})
        ).fetchone()
    assert found is not None
    out = ticket_out(dict(found))
    return {**out, "code": issued["code"], "hall": hall.id, "matter": found["matter_id"]}


async def _check_in(
    conn: DictConn, hall: Hall, code: str, settings: Settings, resident: int | None
) -> dict[str, Any]:
    key = normalise_code(code)
    if key is None:
        raise InvalidParameter("body field 'appointment': not a booking code")
    await case_by_code(conn, key, settings)  # lapses it first when overdue
    now = now_in(settings)
    async with conn.transaction():
        case = await (await conn.execute(_LOCK_BOOKING, (key,))).fetchone()
        if case is None:
            raise NotFound("no appointment with that code")
        if case["hall_id"] != hall.id:
            raise Conflict(f"this appointment is at hall {case['hall_id']!r}, not {hall.id!r}")
        if case["status"] != "booked":
            raise Conflict(f"this appointment is {case['status'].replace('_', ' ')}")
        opens = case["starts_at"] - timedelta(minutes=settings.halls.check_in_before_min)
        if now < opens:
            raise Conflict(f"check-in opens at {opens.astimezone(now.tzinfo).isoformat()}")
        matter = await hall_matter(conn, hall, case["matter_id"], "matter")
        await link_resident(conn, resident, case["id"])
        params = {
            "hall": hall.id, "day": now.date(), "group": matter["queue_group"],
            "case": case["id"], "matter": case["matter_id"], "due": case["starts_at"],
        }  # fmt: skip
        row = await (await conn.execute(_ISSUE, params)).fetchone()
        assert row is not None
    return {"id": row["id"], "code": key}


# --- staff: call, recall, skip, finish ------------------------------------------------------

_WINDOW = "SELECT 1 FROM hall_windows WHERE hall_id = %s AND id = %s"
_CALL_NEXT = (
    """
WITH pick AS (
    SELECT t.id FROM hall_tickets t
     WHERE t.hall_id = %(hall)s AND t.day = %(day)s AND t.status = 'waiting'
       AND t.matter_id IN (SELECT matter_id FROM hall_window_matters
                            WHERE hall_id = %(hall)s AND window_id = %(window)s)
     ORDER BY """
    + RANK.format(t="t")
    + """
     LIMIT 1 FOR UPDATE SKIP LOCKED
), called AS (
    UPDATE hall_tickets t SET status = 'called', window_id = %(window)s, called_at = now(),
                              calls = t.calls + 1
      FROM pick WHERE t.id = pick.id
    RETURNING t.id, t.case_id, t.window_id
), c AS (
    UPDATE hall_cases SET status = 'called', updated_at = now()
     WHERE id IN (SELECT case_id FROM called)
), e AS (
    INSERT INTO hall_case_events (case_id, status, detail)
    SELECT case_id, 'called', window_id FROM called
)
SELECT id FROM called
"""
)


async def _staff_ticket(conn: DictConn, ticket_id: int) -> dict[str, Any]:
    row = await (await conn.execute(TICKET_BY_ID, {"key": ticket_id, "hall": None})).fetchone()
    if row is None:
        raise NotFound(f"no ticket {ticket_id}")
    case = await (
        await conn.execute(
            "SELECT c.code, c.kind, c.name, c.hall_id, c.starts_at FROM hall_cases c"
            " JOIN hall_tickets t ON t.case_id = c.id WHERE t.id = %s",
            (ticket_id,),
        )
    ).fetchone()
    assert case is not None
    return {
        **ticket_out(dict(row)),
        "hall": case["hall_id"],
        "matter": row["matter_id"],
        "kind": case["kind"],
        "name": mask_name(case["name"]),
        "appointment_start": case["starts_at"].isoformat() if case["starts_at"] else None,
    }


@staff_router.post(
    "/api/v1/staff/halls/{hall_id}/windows/{window_id}/next",
    summary="Call the next ticket to this window (204 when nobody waits)",
    responses={204: {"description": "nobody waits for this window's matters"}},
)
async def call_next(
    hall_id: HallId,
    window_id: WindowId,
    staff: StaffDep,
    pool: PoolDep,
    settings: SettingsDep,
) -> Any:
    """Due checked-in appointments first, then walk-ins in arrival order."""
    async with pool.connection() as conn:
        hall = await get_hall(conn, hall_id)
        if await (await conn.execute(_WINDOW, (hall.id, window_id))).fetchone() is None:
            raise NotFound(f"hall {hall.id!r} has no window {window_id!r}")
        params = {"hall": hall.id, "day": now_in(settings).date(), "window": window_id}
        async with conn.transaction():
            row = await (await conn.execute(_CALL_NEXT, params)).fetchone()
        if row is None:
            return Response(status_code=204)
        return await _staff_ticket(conn, int(row["id"]))


_RECALL = """
WITH t AS (
    UPDATE hall_tickets SET calls = calls + 1 WHERE id = %s AND status = 'called'
    RETURNING case_id, window_id
)
INSERT INTO hall_case_events (case_id, status, detail)
SELECT case_id, 'called', window_id || ' (again)' FROM t RETURNING case_id
"""
_NO_SHOW = """
WITH t AS (
    UPDATE hall_tickets SET status = 'no_show', finished_at = now()
     WHERE id = %s AND status = 'called' RETURNING case_id
), c AS (
    UPDATE hall_cases SET status = 'no_show', ended_at = now(), updated_at = now()
     WHERE id IN (SELECT case_id FROM t)
)
INSERT INTO hall_case_events (case_id, status) SELECT case_id, 'no_show' FROM t RETURNING case_id
"""
_FINISH = """
WITH t AS (
    UPDATE hall_tickets SET status = 'done', outcome = %(outcome)s, finished_at = now()
     WHERE id = %(id)s AND status = 'called' RETURNING case_id
), c AS (
    UPDATE hall_cases SET status = %(outcome)s, ended_at = now(), updated_at = now()
     WHERE id IN (SELECT case_id FROM t)
)
INSERT INTO hall_case_events (case_id, status, detail)
SELECT case_id, %(outcome)s, %(note)s FROM t RETURNING case_id
"""


class FinishIn(BaseModel):
    """How the case ended at the window."""

    model_config = ConfigDict(extra="forbid")

    outcome: Annotated[str, Field(max_length=40)]
    note: Annotated[str, Field(max_length=500)] | None = None

    @model_validator(mode="after")
    def _known(self) -> FinishIn:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
        if self.note is not None:
            self.note = self.note.replace("\x00", "")
        return self


async def _after_call(
    conn: DictConn, ticket_id: int, statement: str, params: Any
) -> dict[str, Any]:
    async with conn.transaction():
        done = await (await conn.execute(statement, params)).fetchone()
    if done is None:
        current = await _staff_ticket(conn, ticket_id)  # 404 when unknown
        raise Conflict(
            f"ticket {ticket_id} is {current['status'].replace('_', ' ')}; only a called ticket"
            " can be recalled, skipped or finished"
        )
    return await _staff_ticket(conn, ticket_id)


@staff_router.post("/api/v1/staff/tickets/{ticket_id}/recall", summary="Call a ticket again")
async def recall(ticket_id: TicketId, staff: StaffDep, pool: PoolDep) -> dict[str, Any]:
    """The called ticket is announced again."""
    async with pool.connection() as conn:
        return await _after_call(conn, ticket_id, _RECALL, (ticket_id,))


@staff_router.post(
    "/api/v1/staff/tickets/{ticket_id}/no-show", summary="Skip a called ticket as a no-show"
)
async def no_show(ticket_id: TicketId, staff: StaffDep, pool: PoolDep) -> dict[str, Any]:
    """The resident did not come to the window."""
    async with pool.connection() as conn:
        return await _after_call(conn, ticket_id, _NO_SHOW, (ticket_id,))


@staff_router.post(
    "/api/v1/staff/tickets/{ticket_id}/finish",
    summary="Finish a called ticket: done, needs_documents or referred",
)
async def finish(
    ticket_id: TicketId, body: FinishIn, staff: StaffDep, pool: PoolDep
) -> dict[str, Any]:
    """The case ends with its outcome; the resident may now rate it."""
    async with pool.connection() as conn:
        params = {"id": ticket_id, "outcome": body.outcome, "note": body.note}
        return await _after_call(conn, ticket_id, _FINISH, params)


_STAFF_QUEUE = (
    """
SELECT t.id FROM hall_tickets t
 WHERE t.hall_id = %(hall)s AND t.day = %(day)s AND t.status IN ('waiting', 'called')
   AND (%(window)s::text IS NULL OR t.status = 'waiting' AND t.matter_id IN (
        SELECT matter_id FROM hall_window_matters WHERE hall_id = %(hall)s
           AND window_id = %(window)s) OR t.window_id = %(window)s)
 ORDER BY t.status DESC, """
    + RANK.format(t="t")
    + """
 LIMIT 200
"""
)


async def staff_queue(
    conn: DictConn, hall_id: str, window_id: str | None, settings: Settings
) -> list[dict[str, Any]]:
    """The open tickets of a hall (or a window): called first, then in calling order."""
    hall = await get_hall(conn, hall_id)
    params = {"hall": hall.id, "day": now_in(settings).date(), "window": window_id}
    rows = await (await conn.execute(_STAFF_QUEUE, params)).fetchall()
    return [await _staff_ticket(conn, int(r["id"])) for r in rows]


@staff_router.get(
    "/api/v1/staff/halls/{hall_id}/queue", summary="Open tickets (names masked), for the staff"
)
async def get_staff_queue(
    hall_id: HallId,
    staff: StaffDep,
    pool: PoolDep,
    settings: SettingsDep,
    window: Annotated[str | None, Query(pattern=ID_PATTERN, description="one window")] = None,
) -> dict[str, Any]:
    """The hall's open tickets in calling order."""
    async with pool.connection() as conn:
        tickets = await staff_queue(conn, hall_id, window, settings)
    return {"hall": hall_id, "tickets": tickets}
