"""Staff routes through real HTTP: tokens, ratings worst-first with filters, alerts, cleaning."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import orjson
import pytest
from fastapi.testclient import TestClient

from geoservice.app import create_app
from geoservice.db.connection import connect
from geoservice.toilets.admin import add_device, add_staff, revoke_staff
from tests.geoservice.toilet_support import add_facilities, auth, reading, toilet_settings

ROUTES = [
    ("GET", "/api/v1/staff/ratings"),
    ("GET", "/api/v1/staff/alerts"),
    ("POST", "/api/v1/staff/toilets/toilet-a/cleaned"),
]


@dataclass
class Env:
    url: str
    client: TestClient
    staff: dict[str, str]
    device_token: str


@pytest.fixture
def env(fresh_db: str) -> Iterator[Env]:
    add_facilities(fresh_db)
    with connect(fresh_db, autocommit=True) as conn:
        staff_token = add_staff(conn, "李清洁")
        _, device_token = add_device(conn, "toilet-a", 2)
    settings = toilet_settings(fresh_db, busy_after_people=10)
    with TestClient(create_app(settings)) as client:
        yield Env(fresh_db, client, auth(staff_token), device_token)


def rate(env: Env, facility: str, score: int, agent: str, **extra: Any) -> None:
    """A rating by another resident per agent: alerts count raters by network address."""
    env.client.cookies.clear()
    transport: Any = env.client._transport  # noqa: SLF001 - the ASGI scope's client address
    address, transport.client = transport.client, (f"agent-{agent}", 50000)
    try:
        answer = env.client.post(
            f"/api/v1/facilities/{facility}/ratings",
            json={"score": score, **extra},
            headers={"User-Agent": agent},
        )
    finally:
        transport.client = address
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_staff_routes_need_a_staff_token(env: Env, method: str, path: str) -> None:
    assert env.client.request(method, path).status_code == 401
    assert env.client.request(method, path, headers=auth("sms_nope")).status_code == 401
    assert env.client.request(method, path, headers=auth(env.device_token)).status_code == 403


def test_a_revoked_staff_token_is_refused(env: Env) -> None:
    assert env.client.get("/api/v1/staff/alerts", headers=env.staff).status_code == 200
    with connect(env.url, autocommit=True) as conn:
        revoke_staff(conn, "李清洁")
    answer = env.client.get("/api/v1/staff/alerts", headers=env.staff)
    assert answer.status_code == 401 and "revoked" in answer.json()["detail"]


def test_ratings_worst_or_recent_first_with_filters(env: Env) -> None:
    rate(env, "toilet-a", 4, "a", comment="ok")
    rate(env, "toilet-b", 1, "b", comment="<b>dirty</b>", tags=["dirty"])
    rate(env, "clinic-a", 3, "c")
    rate(env, "toilet-c", 2, "d")
    get = env.client.get
    worst = get("/api/v1/staff/ratings", headers=env.staff).json()["ratings"]
    assert [r["score"] for r in worst] == [1, 2, 3, 4]
    assert worst[0]["comment"] == "<b>dirty</b>" and worst[0]["tags"] == ["dirty"]
    assert "client_hash" not in worst[0]
    recent = get("/api/v1/staff/ratings?sort=recent", headers=env.staff).json()["ratings"]
    assert [r["facility_id"] for r in recent] == ["toilet-c", "clinic-a", "toilet-b", "toilet-a"]
    toilets = get("/api/v1/staff/ratings?layer=toilet", headers=env.staff).json()["ratings"]
    assert {r["layer"] for r in toilets} == {"toilet"} and len(toilets) == 3
    # toilet-b sits at 114.11, 22.545: a small box around it
    boxed = get("/api/v1/staff/ratings?bbox=114.105,22.54,114.115,22.55", headers=env.staff).json()[
        "ratings"
    ]
    assert [r["facility_id"] for r in boxed] == ["toilet-b"]
    cell = h3.latlng_to_cell(22.5480, 114.1200, 8)
    in_cell = get(f"/api/v1/staff/ratings?h3={cell}", headers=env.staff).json()["ratings"]
    assert "toilet-a" in {r["facility_id"] for r in in_cell}
    assert "toilet-c" not in {r["facility_id"] for r in in_cell}
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    since = get("/api/v1/staff/ratings", params={"since": later}, headers=env.staff).json()
    assert since["ratings"] == []
    page = get("/api/v1/staff/ratings?limit=2&offset=1", headers=env.staff).json()["ratings"]
    assert [r["score"] for r in page] == [2, 3]


@pytest.mark.parametrize(
    "bbox",
    [
        "114.110001,22.54,114.115,22.55",  # 0.1 m east of toilet-b's west edge
        "114.105,22.545001,114.115,22.55",  # 0.1 m north of it
        "114.1,22.53,114.109999,22.544999",  # its north-east corner 0.1 m south-west of it
    ],
)
def test_a_bbox_takes_no_point_just_outside(env: Env, bbox: str) -> None:
    # `&&` alone compares float4 boxes rounded outwards: these boxes "overlap" toilet-b
    # (114.11, 22.545), which lies outside each by about 0.1 m
    rate(env, "toilet-b", 1, "b")
    x0, y0, x1, y1 = (float(v) for v in bbox.split(","))
    with connect(env.url) as conn:
        row = conn.execute(
            "SELECT geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326) AS overlaps,"
            " ST_X(geom) AS lon, ST_Y(geom) AS lat FROM facilities WHERE id = 'toilet-b'",
            (x0, y0, x1, y1),
        ).fetchone()
    assert row is not None and row["overlaps"]  # the imprecision this guards against
    assert not (x0 <= row["lon"] <= x1 and y0 <= row["lat"] <= y1)
    boxed = env.client.get(f"/api/v1/staff/ratings?bbox={bbox}", headers=env.staff)
    assert boxed.status_code == 200 and boxed.json()["ratings"] == []
    # a box whose edge passes exactly through the point holds it
    edge = f"114.11,22.54,114.115,{row['lat']}"
    on_edge = env.client.get(f"/api/v1/staff/ratings?bbox={edge}", headers=env.staff).json()
    assert [r["facility_id"] for r in on_edge["ratings"]] == ["toilet-b"]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("sort=best", "sort"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("bbox=1,2,3", "bbox"),
        ("h3=zzz", "h3"),
        ("since=yesterday", "since"),
        ("since=2024-01-01T00:00:00", "since"),
        ("layer=castle", "layer"),
    ],
)
def test_bad_staff_parameters_are_named(env: Env, query: str, name: str) -> None:
    answer = env.client.get(f"/api/v1/staff/ratings?{query}", headers=env.staff)
    assert answer.status_code == 422
    assert name in answer.json()["detail"]


def alerts(env: Env) -> dict[tuple[str, str], dict[str, Any]]:
    body = env.client.get("/api/v1/staff/alerts", headers=env.staff).json()
    assert body["count"] == len(body["alerts"])
    return {(a["kind"], a["facility_id"]): a for a in body["alerts"]}


def test_alerts_each_with_since_and_cleaning_closes_them(env: Env) -> None:
    assert alerts(env) == {}
    # low rating: five ratings averaging below 3
    for i, score in enumerate([1, 2, 3, 2, 1]):
        rate(env, "toilet-b", score, f"r{i}")
    # ammonia and heavy use from the sensor
    now = datetime.now(UTC)
    body = {
        "readings": [
            reading(0, now - timedelta(seconds=30), people_count=6, nh3_ppm=12.0),
            reading(1, now - timedelta(seconds=20), people_count=6, nh3_ppm=31.5),
        ]
    }
    answer = env.client.post(
        "/api/v1/sensors/readings", content=orjson.dumps(body), headers=auth(env.device_token)
    )
    assert answer.status_code == 200
    # a sensor on toilet-c that has gone silent
    with connect(env.url, autocommit=True) as conn:
        add_device(conn, "toilet-c", 1)
        conn.execute(
            "UPDATE toilet_devices SET created_at = now() - interval '2 hours'"
            " WHERE facility_id = 'toilet-c'"
        )
        conn.execute(
            "UPDATE toilet_status SET last_seen = now() - interval '20 minutes'"
            " WHERE facility_id = 'toilet-c'"
        )
    found = alerts(env)
    assert set(found) == {
        ("low_rating", "toilet-b"),
        ("nh3_high", "toilet-a"),
        ("busy", "toilet-a"),
        ("sensor_offline", "toilet-c"),
    }
    for alert in found.values():
        assert datetime.fromisoformat(alert["since"]) <= datetime.now(UTC)
    assert found[("low_rating", "toilet-b")]["detail"] == {"average_30d": 1.8, "count_30d": 5}
    assert found[("nh3_high", "toilet-a")]["detail"]["nh3_ppm"] == 31.5
    assert found[("nh3_high", "toilet-a")]["since"] == body["readings"][1]["observed_at"]
    assert found[("busy", "toilet-a")]["detail"]["people_since_clean"] == 12
    assert found[("sensor_offline", "toilet-c")]["detail"]["silent_s"] >= 1200

    cleaned = env.client.post("/api/v1/staff/toilets/toilet-a/cleaned", headers=env.staff)
    assert cleaned.status_code == 200
    result = cleaned.json()
    assert result["cleaned_by"] == "李清洁" and result["people_since_clean"] == 12
    assert sorted(result["closed_alerts"]) == ["busy", "nh3_high"]
    after = alerts(env)
    assert ("nh3_high", "toilet-a") not in after and ("busy", "toilet-a") not in after
    assert ("low_rating", "toilet-b") in after
    status = env.client.get("/api/v1/toilets/toilet-a/status").json()
    assert status["people_since_clean"] == 0 and status["cleaned_by"] == "李清洁"
    with connect(env.url) as conn:
        row = conn.execute("SELECT staff_name, closed_alerts FROM toilet_cleanings").fetchone()
    assert row is not None and row["staff_name"] == "李清洁"

    # a late reading observed before the clean does not count towards use since it
    late = reading(2, now - timedelta(seconds=25), people_count=50)
    env.client.post(
        "/api/v1/sensors/readings", content=orjson.dumps(late), headers=auth(env.device_token)
    )
    assert env.client.get("/api/v1/toilets/toilet-a/status").json()["people_since_clean"] == 0
    # one observed after it does, in the same post
    both = {
        "readings": [
            reading(3, now - timedelta(seconds=26), people_count=40),
            reading(4, people_count=3, at=datetime.now(UTC)),
        ]
    }
    env.client.post(
        "/api/v1/sensors/readings", content=orjson.dumps(both), headers=auth(env.device_token)
    )
    assert env.client.get("/api/v1/toilets/toilet-a/status").json()["people_since_clean"] == 3
    # good ratings lift the average: the low-rating alert closes
    for i in range(6):
        rate(env, "toilet-b", 5, f"g{i}")
    assert ("low_rating", "toilet-b") not in alerts(env)


def test_cleaning_only_toilets(env: Env) -> None:
    for facility in ("clinic-a", "nope"):
        answer = env.client.post(f"/api/v1/staff/toilets/{facility}/cleaned", headers=env.staff)
        assert answer.status_code == 404
