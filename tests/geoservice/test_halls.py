"""Service halls through the API: set-up, bookings, tickets, the window, progress, evaluation."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from icalendar import Calendar

from geoservice.app import create_app
from geoservice.db.connection import connect
from geoservice.residents.signin import SESSION_COOKIE
from tests.conftest import load_sample, settings_for
from tests.geoservice.halls_support import (
    CAPACITY,
    DISTRICT_HALL,
    MATTER,
    OPEN_HALL,
    OTHER_MATTER,
    ZONE,
    future_weekday_slot,
    load_halls_db,
    next_slot,
    servicemap,
)
from tests.geoservice.residents_support import Mailbox, bearer, sign_up, smtp_server
from tests.web.conftest import serving

_phones = iter(range(13900000000, 13999999999, 7919))


def phone() -> str:
    """A fresh valid mobile number for each booking."""
    return str(next(_phones))


@pytest.fixture(scope="module")
def halls_db(
    make_db: Callable[[], str], sample_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """(database URL, staff token): the sample district with its halls loaded."""
    url = make_db()
    load_sample(url, sample_dir)
    token = load_halls_db(url, sample_dir, tmp_path_factory.mktemp("halls"))
    return url, token


@pytest.fixture(scope="module")
def api(halls_db: tuple[str, str]) -> Iterator[TestClient]:
    """A client of the app over the halls database (generous per-address bound)."""
    settings = settings_for(halls_db[0])
    settings.halls = settings.halls.model_copy(update={"max_per_address_per_hour": 10_000})
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def staff(halls_db: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {halls_db[1]}"}


def book(api: TestClient, at: datetime, **override: Any) -> Any:
    body = {"hall": OPEN_HALL, "matter": MATTER, "start": at.isoformat(), "name": "张三",
            "phone": phone(), **override}  # fmt: skip
    return api.post("/api/v1/appointments", json=body)


# --- set-up -------------------------------------------------------------------------------


def test_halls_list_every_sample_hall_with_live_load(api: TestClient) -> None:
    halls = api.get("/api/v1/halls").json()
    assert len(halls) == 15  # district hall, 4 specialised, 10 street halls
    names = {h["name"] for h in halls}
    assert "罗湖区政务服务中心" in names and "罗湖区民政局婚姻登记大厅" in names
    for hall in halls:
        assert {"waiting", "serving", "estimated_wait_min"} <= hall.keys()


def test_hall_detail_has_windows_matters_with_guides_and_hours(api: TestClient) -> None:
    hall = api.get(f"/api/v1/halls/{DISTRICT_HALL}").json()
    assert hall["hours"] == "Mo-Fr 09:00-12:00,14:00-18:00; Sa 09:00-12:00"
    assert len(hall["windows"]) == 18
    matters = {m["id"]: m for m in hall["matters"]}
    assert "M-HHR-001" in matters and "M-HEA-004" in matters
    guides = matters["M-HHR-002"]["guides"]
    assert guides and all(g["id"].startswith("D") for g in guides)


def test_loading_again_replaces_the_set_up_and_keeps_bookings(
    api: TestClient, halls_db: tuple[str, str], tmp_path: Path
) -> None:
    booked = book(api, future_weekday_slot(3), hall=DISTRICT_HALL, matter="M-HHR-001")
    assert booked.status_code == 201, booked.text
    setup = {"halls": [{"facility": DISTRICT_HALL, "slot_minutes": 15, "hours":
             "Mo-Fr 09:00-12:00,14:00-18:00; Sa 09:00-12:00", "windows": [
                 {"id": "1", "name": "户籍窗口", "matters": ["M-HHR-001"]},
                 {"id": "2", "name": "综合窗口", "matters": ["M-HHR-001", "M-HHR-002"]}]}]}  # fmt: skip
    path = tmp_path / "one.json"
    path.write_text(json.dumps(setup))
    try:
        assert servicemap("halls", "load", str(path), url=halls_db[0]).returncode == 0
        hall = api.get(f"/api/v1/halls/{DISTRICT_HALL}").json()
        assert [w["id"] for w in hall["windows"]] == ["1", "2"]
        assert api.get(f"/api/v1/appointments/{booked.json()['code']}").json()["status"] == "booked"
    finally:
        from ingest.halls_sample import halls_setup

        full = tmp_path / "full.json"
        full.write_text(json.dumps({"halls": [h for h in halls_setup()
                                              if h["facility"] == DISTRICT_HALL]}))  # fmt: skip
        assert servicemap("halls", "load", str(full), url=halls_db[0]).returncode == 0


def test_a_bad_set_up_file_writes_nothing_and_names_each_problem(
    halls_db: tuple[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"halls": [
        {"facility": "no-such-hall", "windows": [{"id": "1", "name": "x", "matters": ["M-HHR-001"]}]},
        {"facility": DISTRICT_HALL, "hours": "not hours",
         "windows": [{"id": "1", "name": "x", "matters": ["M-NOPE"]}]},
    ]}))  # fmt: skip
    result = servicemap("halls", "load", str(path), url=halls_db[0])
    assert result.returncode != 0
    assert "halls.1.hours" in result.stderr and "Traceback" not in result.stderr
    path.write_text(json.dumps({"halls": [
        {"facility": "no-such-hall", "windows": [{"id": "1", "name": "x", "matters": ["M-HHR-001"]}]},
        {"facility": DISTRICT_HALL, "windows": [{"id": "1", "name": "x", "matters": ["M-NOPE"]}]},
    ]}))  # fmt: skip
    result = servicemap("halls", "load", str(path), url=halls_db[0])
    assert result.returncode != 0
    assert "no-such-hall" in result.stderr and "M-NOPE" in result.stderr
    with connect(halls_db[0]) as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM hall_windows WHERE hall_id = %s", (DISTRICT_HALL,)
        ).fetchone()
    assert row is not None and row["n"] == 18


# --- slots and bookings --------------------------------------------------------------------


def test_slots_follow_the_hours_with_the_lunch_break(api: TestClient) -> None:
    day = future_weekday_slot(2).date()
    slots = api.get(
        f"/api/v1/halls/{DISTRICT_HALL}/slots", params={"matter": "M-HHR-001", "date": str(day)}
    ).json()
    starts = [datetime.fromisoformat(s["start"]) for s in slots]
    assert starts[0].strftime("%H:%M") == "09:00" and starts[-1].strftime("%H:%M") == "17:45"
    assert not any(12 <= s.hour < 14 for s in starts)
    assert len(slots) == (12 + 16)
    assert all(s["capacity"] == 3 and s["free"] <= s["capacity"] for s in slots)
    assert starts[0].utcoffset() == timedelta(hours=8)


def test_book_get_reschedule_cancel_and_ics(api: TestClient) -> None:
    start = future_weekday_slot(2)
    mobile = phone()
    created = book(api, start, phone=f"+86 {mobile[:3]}-{mobile[3:7]}-{mobile[7:]}")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "booked" and len(body["code"]) >= 8
    assert {"id", "code", "hall", "matter", "start", "end"} <= body.keys()
    assert datetime.fromisoformat(body["start"]) == start
    code = body["code"]
    got = api.get(f"/api/v1/appointments/{code}").json()
    assert got["phone"] == mobile  # the code's holder sees it in full
    ics = api.get(f"/api/v1/appointments/{code}/calendar.ics")
    assert ics.status_code == 200 and ics.headers["content-type"].startswith("text/calendar")
    event = next(iter(Calendar.from_ical(ics.content).walk("VEVENT")))
    assert event.decoded("dtstart") == start and code in str(event.get("description"))
    # the same phone, matter and day again: 409
    again = book(api, start + timedelta(minutes=15), phone=mobile)
    assert again.status_code == 409 and "phone" in again.json()["detail"]
    moved = api.patch(
        f"/api/v1/appointments/{code}", json={"start": (start + timedelta(hours=1)).isoformat()}
    )
    assert moved.status_code == 200, moved.text
    assert datetime.fromisoformat(moved.json()["start"]) == start + timedelta(hours=1)
    slots = api.get(f"/api/v1/halls/{OPEN_HALL}/slots",
                    params={"matter": MATTER, "date": str(start.date())}).json()  # fmt: skip
    by_start = {datetime.fromisoformat(s["start"]): s for s in slots}
    assert by_start[start]["booked"] == 0 and by_start[start + timedelta(hours=1)]["booked"] == 1
    cancelled = api.delete(f"/api/v1/appointments/{code}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert api.delete(f"/api/v1/appointments/{code}").status_code == 409
    slots = api.get(f"/api/v1/halls/{OPEN_HALL}/slots",
                    params={"matter": MATTER, "date": str(start.date())}).json()  # fmt: skip
    by_start = {datetime.fromisoformat(s["start"]): s for s in slots}
    assert by_start[start + timedelta(hours=1)]["free"] == CAPACITY
    # after cancelling, the phone may book that matter that day again
    assert book(api, start, phone=mobile).status_code == 201


def test_a_full_slot_is_409(api: TestClient) -> None:
    start = future_weekday_slot(4) + timedelta(hours=3)
    answers = [book(api, start).status_code for _ in range(CAPACITY + 2)]
    assert answers == [201] * CAPACITY + [409, 409]


def test_phone_numbers_are_masked_for_staff(api: TestClient, staff: dict[str, str]) -> None:
    start = next_slot()
    created = book(api, start, phone="13812341234", matter=OTHER_MATTER)
    assert created.status_code == 201, created.text
    ticket = api.post(
        f"/api/v1/halls/{OPEN_HALL}/tickets", json={"appointment": created.json()["code"]}
    )
    assert ticket.status_code == 201, ticket.text
    queue = api.get(f"/api/v1/staff/halls/{OPEN_HALL}/queue", headers=staff).json()
    text = json.dumps(queue, ensure_ascii=False)
    assert "13812341234" not in text and "张三" not in text and "张*" in text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"phone": "12345678901"}, "phone"),
        ({"phone": "1381234123"}, "phone"),
        ({"phone": "1" * 10_000}, "phone"),
        ({"name": ""}, "name"),
        ({"name": "\x00\x01"}, "name"),
        ({"name": "张" * 100_000}, "name"),
        ({"start": "tomorrow"}, "start"),
        ({"start": "2026-01-05T09:00:00"}, "start"),
        ({"start": "9999-12-31T23:59:59+14:00"}, "start"),
        ({"start": "0001-01-01T00:00:00+00:00"}, "start"),
        ({"hall": "no\x00such"}, "hall"),
        ({"hall": "x" * 5000}, "hall"),
        ({"matter": "M-EDU-999"}, "matter"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_booking_fields_are_422_naming_the_field(
    api: TestClient, change: dict[str, Any], field: str
) -> None:
    answer = book(api, future_weekday_slot(2), **change)
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["detail"]


def test_starts_off_the_grid_past_beyond_the_horizon_or_outside_hours(api: TestClient) -> None:
    zone = ZoneInfo(ZONE)
    day = future_weekday_slot(2)
    sunday = day + timedelta(days=6 - day.weekday())
    for start, words in [
        (day + timedelta(minutes=7), "not a slot start"),
        (day.replace(hour=12, minute=30), "not a slot start"),
        (datetime.now(zone) - timedelta(hours=2), "past"),
        (day + timedelta(days=60), "horizon"),
        (sunday, "closed"),
    ]:
        answer = book(api, start, hall=DISTRICT_HALL, matter="M-HHR-001")
        assert answer.status_code == 422, (start, answer.text)
        assert words in answer.json()["detail"] and "start" in answer.json()["detail"]


def test_unknown_ids_are_404_and_bad_parameters_422(api: TestClient) -> None:
    assert api.get("/api/v1/halls/no-such-hall").status_code == 404
    assert api.get("/api/v1/halls/a%00b").status_code == 422
    assert api.get("/api/v1/appointments/ABCDEFGHJK").status_code == 404
    assert api.get("/api/v1/appointments/%00%00").status_code == 404
    assert api.get("/api/v1/cases/" + "A" * 60).status_code == 404
    assert api.get("/api/v1/appointments/" + "A" * 500).status_code == 422
    slots = f"/api/v1/halls/{OPEN_HALL}/slots"
    for params in ({"matter": MATTER, "date": "2026-13-40"}, {"matter": MATTER, "date": "9999-01-01"},
                   {"matter": "nope"}, {"matter": "a\x00"}, {}):  # fmt: skip
        answer = api.get(slots, params=params)
        assert answer.status_code == 422, (params, answer.text)
    tickets = f"/api/v1/halls/{OPEN_HALL}/tickets"
    for body in ({}, {"matter": MATTER, "appointment": "ABCDEFGHJK"}, {"matter": 5},
                 {"appointment": "x"}, {"matter": "\x00"}):  # fmt: skip
        answer = api.post(tickets, json=body)
        assert answer.status_code == 422, (body, answer.text)
    assert api.post("/api/v1/halls/nope/tickets", json={"matter": MATTER}).status_code == 404


def test_bookings_per_phone_are_bounded(api: TestClient) -> None:
    mobile = phone()
    matters = ["M-HHR-002", "M-HHR-004", "M-SIN-003", "M-SIN-001"]
    start = future_weekday_slot(5)
    answers = [book(api, start, matter=m, phone=mobile).status_code for m in matters]
    assert answers == [201, 201, 201, 429]


def test_bookings_per_network_address_are_bounded(halls_db: tuple[str, str]) -> None:
    settings = settings_for(halls_db[0])
    settings.halls = settings.halls.model_copy(update={"max_per_address_per_hour": 2})
    settings.service = settings.service.model_copy(update={"client_salt": "another-salt"})
    with TestClient(create_app(settings)) as client:
        start = future_weekday_slot(6)
        answers = [book(client, start + timedelta(minutes=15 * i)).status_code for i in range(3)]
        assert answers == [201, 201, 429]
        assert (
            client.post(f"/api/v1/halls/{OPEN_HALL}/tickets", json={"matter": MATTER}).status_code
            == 429
        )


# --- queue, window, progress, evaluation -------------------------------------------------------


def test_walk_in_check_in_call_finish_evaluate(
    api: TestClient, staff: dict[str, str], halls_db: tuple[str, str]
) -> None:
    tickets = f"/api/v1/halls/{OPEN_HALL}/tickets"
    window = f"/api/v1/staff/halls/{OPEN_HALL}/windows/1/next"
    # clear whatever earlier tests left waiting at this window
    while (called := api.post(window, headers=staff)).status_code == 200:
        api.post(f"/api/v1/staff/tickets/{called.json()['id']}/no-show", headers=staff)
    first = api.post(tickets, json={"matter": MATTER})
    second = api.post(tickets, json={"matter": MATTER})
    assert first.status_code == second.status_code == 201, first.text
    a, b = first.json(), second.json()
    assert a["number"][0] == b["number"][0] and int(b["number"][1:]) == int(a["number"][1:]) + 1
    assert b["position"] == a["position"] + 1
    assert {"id", "number", "position", "estimated_wait_min"} <= a.keys()
    # an appointment for the next slot, checked in now: due once its slot starts
    booked = book(api, next_slot()).json()
    checked = api.post(tickets, json={"appointment": booked["code"]})
    assert checked.status_code == 201, checked.text
    assert api.post(tickets, json={"appointment": booked["code"]}).status_code == 409
    assert api.get(f"/api/v1/cases/{booked['code']}").json()["status"] == "checked_in"
    # make the appointment due now: it is called before the walk-ins who came first
    with connect(halls_db[0], autocommit=True) as conn:
        conn.execute(
            "UPDATE hall_tickets SET due_at = now() - interval '1 minute' WHERE id = %s",
            (checked.json()["id"],),
        )
    queue = api.get(f"/api/v1/halls/{OPEN_HALL}/queue").json()
    assert queue["waiting"] >= 3 and queue["estimated_wait_min"] >= 0
    order = []
    for _ in range(3):
        called = api.post(window, headers=staff)
        assert called.status_code == 200, called.text
        order.append(called.json()["number"])
        if called.json()["id"] != a["id"]:
            finish = api.post(f"/api/v1/staff/tickets/{called.json()['id']}/finish",
                              json={"outcome": "needs_documents"}, headers=staff)  # fmt: skip
            assert finish.status_code == 200, finish.text
        else:
            assert (
                api.post(f"/api/v1/staff/tickets/{a['id']}/recall", headers=staff).status_code
                == 200
            )
            now_serving = api.get(f"/api/v1/halls/{OPEN_HALL}/queue").json()["now_serving"]
            assert {"window": "1", "number": a["number"]} in now_serving
            finish = api.post(f"/api/v1/staff/tickets/{a['id']}/finish",
                              json={"outcome": "done"}, headers=staff)  # fmt: skip
            assert finish.status_code == 200 and finish.json()["outcome"] == "done"
    assert order == [checked.json()["number"], a["number"], b["number"]]
    assert api.post(window, headers=staff).status_code == 204
    assert api.post(f"/api/v1/staff/tickets/{a['id']}/finish", json={"outcome": "done"},
                    headers=staff).status_code == 409  # fmt: skip
    # progress of the walk-in: every state with its time
    case = api.get(f"/api/v1/cases/{a['code']}").json()
    assert [e["status"] for e in case["events"]] == ["checked_in", "called", "called", "done"]
    # one evaluation per case
    rated = api.post(
        f"/api/v1/cases/{a['code']}/evaluation", json={"score": 2, "comment": "等太久"}
    )
    assert rated.status_code == 201 and rated.json()["label"]["zh-Hans"] == "不满意"
    again = api.post(f"/api/v1/cases/{a['code']}/evaluation", json={"score": 5})
    assert again.status_code == 409
    assert (
        api.post(f"/api/v1/cases/{booked['code']}/evaluation", json={"score": 5}).status_code == 201
    )
    assert api.post(f"/api/v1/cases/{b['code']}/evaluation", json={"score": 0}).status_code == 422
    # the staff's figures and the alert for the low score
    figures = api.get("/api/v1/staff/halls/evaluations", params={"group_by": "window",
                      "hall": OPEN_HALL}, headers=staff).json()  # fmt: skip
    assert any(f["window"] == "1" and f["count"] >= 2 for f in figures["figures"])
    alerts = api.get("/api/v1/staff/halls/alerts", headers=staff).json()["alerts"]
    alert = next(x for x in alerts if x["matter"] == MATTER and x["comment"] == "等太久")
    ack = api.post(f"/api/v1/staff/halls/alerts/{alert['case']}/acknowledge", headers=staff)
    assert ack.status_code == 200
    alerts = api.get("/api/v1/staff/halls/alerts", headers=staff).json()["alerts"]
    assert all(x["case"] != alert["case"] for x in alerts)


def test_staff_routes_need_the_staff_token(api: TestClient) -> None:
    for method, path in [
        ("post", f"/api/v1/staff/halls/{OPEN_HALL}/windows/1/next"),
        ("post", "/api/v1/staff/tickets/1/finish"),
        ("get", "/api/v1/staff/halls/evaluations"),
        ("get", f"/api/v1/staff/halls/{OPEN_HALL}/queue"),
    ]:
        assert getattr(api, method)(path).status_code == 401
    bad = {"Authorization": "Bearer sms_nope"}
    assert (
        api.post(f"/api/v1/staff/halls/{OPEN_HALL}/windows/1/next", headers=bad).status_code == 401
    )


def test_unknown_window_is_404(api: TestClient, staff: dict[str, str]) -> None:
    answer = api.post(f"/api/v1/staff/halls/{OPEN_HALL}/windows/99/next", headers=staff)
    assert answer.status_code == 404


def test_check_in_too_early_and_lapsed_bookings(api: TestClient, halls_db: tuple[str, str]) -> None:
    tickets = f"/api/v1/halls/{OPEN_HALL}/tickets"
    early = book(api, next_slot(120)).json()
    answer = api.post(tickets, json={"appointment": early["code"]})
    assert answer.status_code == 409 and "opens" in answer.json()["detail"]
    late = book(api, next_slot(60)).json()
    with psycopg.connect(halls_db[0], autocommit=True) as conn:
        conn.execute(
            "UPDATE hall_cases SET starts_at = now() - interval '16 minutes' WHERE code = %s",
            (late["code"],),
        )
    assert api.get(f"/api/v1/appointments/{late['code']}").json()["status"] == "lapsed"
    assert api.post(tickets, json={"appointment": late["code"]}).status_code == 409
    assert (
        api.post(f"/api/v1/cases/{late['code']}/evaluation", json={"score": 5}).status_code == 409
    )


def test_personal_data_is_erased_after_the_retention_period(
    api: TestClient, halls_db: tuple[str, str]
) -> None:
    created = book(api, future_weekday_slot(3) + timedelta(hours=2)).json()
    assert api.delete(f"/api/v1/appointments/{created['code']}").status_code == 200
    with psycopg.connect(halls_db[0], autocommit=True) as conn:
        conn.execute(
            "UPDATE hall_cases SET ended_at = now() - interval '31 days' WHERE code = %s",
            (created["code"],),
        )
    result = servicemap("halls", "upkeep", url=halls_db[0])
    assert result.returncode == 0, result.stderr
    got = api.get(f"/api/v1/appointments/{created['code']}").json()
    assert got["status"] == "cancelled" and "name" not in got and "phone" not in got


# --- a signed-in resident's bookings and tickets are theirs ------------------------------------


@pytest.fixture(scope="module")
def http_site(halls_db: tuple[str, str]) -> Iterator[tuple[str, Mailbox]]:
    """(base URL, mailbox): a real HTTP server over the halls database, mailing sign-in codes
    through a real SMTP server."""
    settings = settings_for(halls_db[0])
    settings.halls = settings.halls.model_copy(update={"max_per_address_per_hour": 10_000})
    with smtp_server() as (mailbox, smtp_url):
        settings.residents = settings.residents.model_copy(update={"smtp_url": smtp_url})
        with serving(settings) as base:
            yield base, mailbox


def _booking(at: datetime) -> dict[str, str]:
    return {"hall": OPEN_HALL, "matter": MATTER, "start": at.isoformat(), "name": "李四",
            "phone": phone()}  # fmt: skip


def _kept_by(url: str, code: str) -> list[int]:
    """The residents keeping the case with this code."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT rc.resident_id FROM resident_cases rc JOIN hall_cases c ON c.id = rc.case_id"
            " WHERE c.code = %s ORDER BY 1",
            (code,),
        ).fetchall()
    return [int(r["resident_id"]) for r in rows]


def test_bookings_and_tickets_of_a_signed_in_resident_are_theirs(
    http_site: tuple[str, Mailbox], halls_db: tuple[str, str], staff: dict[str, str]
) -> None:
    base, mailbox = http_site
    url = halls_db[0]
    with httpx.Client(base_url=base, timeout=30) as http:
        token = sign_up(http, mailbox, "booker@example.org")  # type: ignore[arg-type]
        neighbour = sign_up(http, mailbox, "neighbour@example.org")  # type: ignore[arg-type]
        # with the bearer token: booked and kept
        mine = http.post("/api/v1/appointments", json=_booking(future_weekday_slot(2)),
                         headers=bearer(token))  # fmt: skip
        assert mine.status_code == 201, mine.text
        # signing in is never required: without a session, with an unknown or signed-out
        # token, with another scheme or a staff token, the booking is made and nobody's
        anonymous = http.post("/api/v1/appointments", json=_booking(next_slot()))
        later = future_weekday_slot(5)
        ways = (bearer("smr_" + "x" * 43), {"Authorization": "Basic dXNlcjpwYXNz"}, staff)
        others = [
            http.post(
                "/api/v1/appointments",
                json=_booking(later + timedelta(minutes=15 * i)),
                headers=headers,
            )  # fmt: skip
            for i, headers in enumerate(ways)
        ]
        assert [a.status_code for a in (anonymous, *others)] == [201] * 4, others[0].text
        # with the session cookie: a walk-in ticket, the check-in of the anonymous booking and
        # a booking through the hall page's form
        http.cookies.set(SESSION_COOKIE, token)
        walk_in = http.post(f"/api/v1/halls/{OPEN_HALL}/tickets", json={"matter": MATTER})
        assert walk_in.status_code == 201, walk_in.text
        checked = http.post(
            f"/api/v1/halls/{OPEN_HALL}/tickets", json={"appointment": anonymous.json()["code"]}
        )
        assert checked.status_code == 201, checked.text
        form = _booking(future_weekday_slot(3)) | {"matter": OTHER_MATTER}
        page = http.post(f"/halls/{OPEN_HALL}/book?lang=en", data=form)
        assert page.status_code == 303, page.text
        form_code = page.headers["location"].split("/appointments/")[1].split("?")[0]
        me_page = http.get("/me?lang=en").text
        http.cookies.clear()

        codes = {mine.json()["code"], walk_in.json()["code"], anonymous.json()["code"], form_code}
        cases = http.get("/api/v1/me/cases", headers=bearer(token)).json()["cases"]
        assert {c["code"] for c in cases} == codes
        assert http.get("/api/v1/me/cases", headers=bearer(neighbour)).json()["cases"] == []
        for answer in others:
            assert _kept_by(url, answer.json()["code"]) == []
        with connect(url) as conn:
            me = conn.execute("SELECT id FROM residents WHERE email = 'booker@example.org'")
            resident = me.fetchone()
        assert resident is not None
        assert all(_kept_by(url, code) == [resident["id"]] for code in codes)
        for code in codes:
            assert f"/appointments/{code}" in me_page

        # their progress joins the resident's feed, and no one else's
        def feed_urls(who: str) -> list[str]:
            items = http.get("/api/v1/me/feed", headers=bearer(who)).json()["items"]
            return [item["url"] for item in items]

        feed = feed_urls(token)
        for code in codes:
            assert any(u.endswith(f"/appointments/{code}") for u in feed), (code, feed)
        assert feed_urls(neighbour) == []
        walk_url = next(u for u in feed if u.endswith(f"/appointments/{walk_in.json()['code']}"))
        before = feed.count(walk_url)
        window = f"/api/v1/staff/halls/{OPEN_HALL}/windows/1/next"
        while (called := http.post(window, headers=staff)).status_code == 200:
            if called.json()["id"] == walk_in.json()["id"]:
                break
            http.post(f"/api/v1/staff/tickets/{called.json()['id']}/no-show", headers=staff)
        assert called.status_code == 200 and called.json()["id"] == walk_in.json()["id"]
        assert feed_urls(token).count(walk_url) == before + 1
        assert feed_urls(neighbour) == []
