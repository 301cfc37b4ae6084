"""Sensor ingestion through real HTTP on a real PostGIS: validation, auth, idempotency, status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from geoservice.app import create_app
from geoservice.db.connection import connect
from geoservice.settings import Settings
from geoservice.toilets.admin import add_device, add_staff, revoke_device
from geoservice.toilets.writer import ACTIVE_S, MAX_GROUP, IngestWriter
from tests.geoservice.toilet_support import (
    add_facilities,
    auth,
    reading,
    stored,
    toilet_settings,
)

URL = "/api/v1/sensors/readings"


@dataclass
class Env:
    url: str
    client: TestClient
    device_id: int
    token: str


@pytest.fixture
def env(fresh_db: str) -> Iterator[Env]:
    add_facilities(fresh_db)
    with connect(fresh_db, autocommit=True) as conn:
        device_id, token = add_device(conn, "toilet-a", 2)
    with TestClient(create_app(toilet_settings(fresh_db))) as client:
        yield Env(fresh_db, client, device_id, token)


def post(env: Env, body: Any, token: str | None = None) -> Any:
    return env.client.post(URL, content=orjson.dumps(body), headers=auth(token or env.token))


def test_single_reading_and_batch_are_stored_and_update_status(env: Env) -> None:
    now = datetime.now(UTC)
    first = post(env, reading(0, now - timedelta(seconds=50), people_count=3, nh3_ppm=4.5))
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 1, "duplicates": 0}
    batch = [
        reading(i, now - timedelta(seconds=50 - i), occupied=(True, i % 2 == 0), people_count=1)
        for i in range(1, 11)
    ]
    second = post(env, {"readings": batch})
    assert second.json() == {"accepted": 10, "duplicates": 0}
    assert stored(env.url, env.device_id) == list(range(11))
    status = env.client.get("/api/v1/toilets/toilet-a/status").json()
    # the newest reading (seq 10) has stall 1 occupied, stall 2 occupied (10 is even)
    assert status["stalls_total"] == 2 and status["stalls_free"] == 0
    assert status["online"] is True and status["sensor"] is True
    assert status["people_since_clean"] == 13
    assert status["nh3_ppm"] == 4.5  # later readings carry none: the last known value stays


def test_retries_and_replays_store_nothing_twice(env: Env) -> None:
    batch = [reading(i) for i in range(5)]
    assert post(env, {"readings": batch}).json() == {"accepted": 5, "duplicates": 0}
    assert post(env, {"readings": batch}).json() == {"accepted": 0, "duplicates": 5}
    assert post(env, batch[2]).json() == {"accepted": 0, "duplicates": 1}
    mixed = [reading(4), reading(5), reading(5), reading(6)]
    assert post(env, {"readings": mixed}).json() == {"accepted": 2, "duplicates": 2}
    assert stored(env.url, env.device_id) == list(range(7))


def test_same_batch_twice_concurrently_is_stored_exactly_once(env: Env) -> None:
    batch = {"readings": [reading(i) for i in range(200)]}
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: post(env, batch), range(8)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert sum(a.json()["accepted"] for a in answers) == 200
    assert sum(a.json()["duplicates"] for a in answers) == 7 * 200
    assert stored(env.url, env.device_id) == list(range(200))


def test_out_of_order_readings_do_not_rewind_live_status(env: Env) -> None:
    now = datetime.now(UTC)
    newer = reading(10, now - timedelta(seconds=10), occupied=(False, False), nh3_ppm=3.0)
    older = reading(
        9, now - timedelta(seconds=20), occupied=(True, True), nh3_ppm=40.0, people_count=4
    )
    assert post(env, newer).json()["accepted"] == 1
    assert post(env, older).json()["accepted"] == 1
    status = env.client.get("/api/v1/toilets/toilet-a/status").json()
    assert status["stalls_free"] == 2 and status["nh3_ppm"] == 3.0
    assert status["observed_at"] == datetime.fromisoformat(newer["observed_at"]).isoformat()
    # entries are counts, not state: the late reading's people still count
    assert status["people_since_clean"] == 4
    assert stored(env.url, env.device_id) == [9, 10]


def test_new_stalls_register_and_are_bounded(fresh_db: str) -> None:
    add_facilities(fresh_db)
    with connect(fresh_db, autocommit=True) as conn:
        device_id, token = add_device(conn, "toilet-b", 1)
    settings = toilet_settings(fresh_db, max_stalls_per_device=3)
    with TestClient(create_app(settings)) as client:
        ok = reading(0, occupied=(False, False, True))
        answer = client.post(URL, content=orjson.dumps(ok), headers=auth(token))
        assert answer.status_code == 200
        status = client.get("/api/v1/toilets/toilet-b/status").json()
        assert status["stalls_total"] == 3 and status["stalls_free"] == 2
        too_many = reading(1, occupied=(False,) * 4)
        refused = client.post(URL, content=orjson.dumps(too_many), headers=auth(token))
        assert refused.status_code == 422
        assert "more than 3 stalls" in refused.json()["detail"]
    assert stored(fresh_db, device_id) == [0]


def test_tokens_missing_invalid_revoked_and_staff(env: Env) -> None:
    body = orjson.dumps(reading(0))
    missing = env.client.post(URL, content=body)
    assert missing.status_code == 401 and "Authorization" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong_scheme = env.client.post(URL, content=body, headers={"Authorization": "Basic abc"})
    assert wrong_scheme.status_code == 401
    invalid = env.client.post(URL, content=body, headers=auth("smd_not-a-real-token"))
    assert invalid.status_code == 401 and "invalid" in invalid.json()["detail"]
    with connect(env.url, autocommit=True) as conn:
        staff_token = add_staff(conn, "Wang")
    staff = env.client.post(URL, content=body, headers=auth(staff_token))
    assert staff.status_code == 403
    # the device posts once (its identity is now cached), then is revoked
    assert post(env, reading(0)).status_code == 200
    with connect(env.url, autocommit=True) as conn:
        revoke_device(conn, env.device_id)
    revoked = post(env, reading(1))
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    assert post(env, reading(2)).status_code == 401
    assert stored(env.url, env.device_id) == [0]


def test_device_posting_for_another_toilet_is_forbidden(env: Env) -> None:
    answer = post(env, {"readings": [reading(0), reading(1, toilet_id="toilet-b")]})
    assert answer.status_code == 403
    assert "readings[1].toilet_id" in answer.json()["detail"]
    assert post(env, reading(2, toilet_id="toilet-a")).status_code == 200
    assert stored(env.url, env.device_id) == [2]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"seq": 1, "observed_at": ', "not valid JSON"),
        (b"[1, 2, 3]", "one reading object"),
        (b"", "empty"),
        (b'{"seq": "1", "observed_at": "2024-01-01T00:00:00Z"}', "seq"),
        (b'{"seq": -1, "observed_at": "2024-01-01T00:00:00Z"}', "seq"),
        (b'{"seq": 1.5, "observed_at": "2024-01-01T00:00:00Z"}', "seq"),
        (b'{"seq": 1}', "observed_at: is required"),
        (b'{"seq": 1, "observed_at": 1700000000}', "observed_at"),
        (b'{"seq": 1, "observed_at": "2024-01-01T00:00:00"}', "observed_at"),
        (b'{"seq": 1, "observed_at": "yesterday"}', "observed_at"),
        (
            b'{"readings": [{"seq": 1, "observed_at": "2030-01-01T00:00:00Z",'
            b' "stalls": [{"id": "1", "occupied": 1}]}]}',
            "readings[0].stalls[0].occupied",
        ),
        (
            b'{"readings": [{"seq": 1, "observed_at": "2030-01-01T00:00:00Z",'
            b' "stalls": [{"id": "a b", "occupied": true}]}]}',
            "readings[0].stalls[0].id",
        ),
        (b'{"readings": []}', "readings"),
        (b'{"readings": {"seq": 1}}', "readings"),
    ],
)
def test_malformed_bodies_are_refused_naming_the_field(env: Env, body: bytes, where: str) -> None:
    answer = env.client.post(URL, content=body, headers=auth(env.token))
    assert answer.status_code == 422, answer.text
    assert where in answer.json()["detail"]
    assert stored(env.url, env.device_id) == []


@pytest.mark.parametrize(
    ("stall_id", "message"),
    [
        (-5, "readings[0].stalls[0].id: Input should be greater than or equal to 0"),
        (1.5, "readings[0].stalls[0].id: Input should be a valid string or a valid integer"),
        ("a b", "readings[0].stalls[0].id: String should match pattern"),
        (True, "readings[0].stalls[0].id: Input should be a valid string or a valid integer"),
    ],
)
def test_a_bad_stall_id_is_named_with_what_is_wrong(env: Env, stall_id: Any, message: str) -> None:
    stalls = [{"id": stall_id, "occupied": True}]
    answer = post(env, {"readings": [reading(0, stalls=stalls)]})
    assert answer.status_code == 422
    assert message in answer.json()["detail"], answer.json()["detail"]
    assert stored(env.url, env.device_id) == []


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("nh3_ppm", -1, "nh3_ppm"),
        ("nh3_ppm", 5000, "nh3_ppm"),
        ("battery_pct", 101, "battery_pct"),
        ("humidity_pct", "50", "humidity_pct"),
        ("people_count", -3, "people_count"),
        ("consumables", {"Paper!": 10}, "consumables"),
    ],
)
def test_numbers_out_of_range_are_refused(env: Env, field: str, value: Any, where: str) -> None:
    answer = post(env, {"readings": [reading(0), reading(1, **{field: value})]})
    assert answer.status_code == 422
    assert f"readings[1].{where}" in answer.json()["detail"]
    assert stored(env.url, env.device_id) == []


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(env: Env, token: str) -> None:
    at = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    body = f'{{"seq": 1, "observed_at": "{at}", "nh3_ppm": {token}}}'.encode()
    answer = env.client.post(URL, content=body, headers=auth(env.token))
    assert answer.status_code == 422
    assert "NaN" in answer.json()["detail"] or "nh3_ppm" in answer.json()["detail"]
    # Python's json writes NaN unless told not to: what a careless client would send
    body = json.dumps({"seq": 2, "observed_at": at, "battery_pct": float("nan")}).encode()
    assert env.client.post(URL, content=body, headers=auth(env.token)).status_code == 422
    assert stored(env.url, env.device_id) == []


def test_future_and_too_old_timestamps_are_refused(env: Env) -> None:
    now = datetime.now(UTC)
    future = post(env, {"readings": [reading(0), reading(1, now + timedelta(minutes=10))]})
    assert future.status_code == 422
    assert "readings[1].observed_at" in future.json()["detail"]
    assert "future" in future.json()["detail"]
    old = post(env, reading(2, now - timedelta(days=60)))
    assert old.status_code == 422 and "horizon" in old.json()["detail"]
    # a little clock skew is fine
    assert post(env, reading(3, now + timedelta(minutes=2))).status_code == 200
    assert stored(env.url, env.device_id) == [3]


def test_a_batch_of_10000_is_too_large(env: Env) -> None:
    at = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    batch = {"readings": [{"seq": i, "observed_at": at} for i in range(10_000)]}
    body = orjson.dumps(batch)
    assert len(body) < 1_000_000  # under the body limit: the batch limit answers
    answer = env.client.post(URL, content=body, headers=auth(env.token))
    assert answer.status_code == 413
    assert "500" in answer.json()["detail"]
    assert stored(env.url, env.device_id) == []


def test_a_5_mb_body_is_refused_before_it_is_read(env: Env) -> None:
    body = b'{"readings": [' + b" " * (5 * 1024 * 1024) + b"]}"
    answer = env.client.post(URL, content=body, headers=auth(env.token))
    assert answer.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(5):
            yield b" " * (1024 * 1024)

    streamed = env.client.post(URL, content=chunks(), headers=auth(env.token))
    assert streamed.status_code == 413
    assert stored(env.url, env.device_id) == []


def test_per_device_rate_limit_answers_429_with_retry_after(fresh_db: str) -> None:
    add_facilities(fresh_db)
    with connect(fresh_db, autocommit=True) as conn:
        device_id, token = add_device(conn, "toilet-c", 2)
        _, other = add_device(conn, "toilet-d", 2)
    settings = toilet_settings(fresh_db, device_rate_per_s=0.01, device_burst=2)
    with TestClient(create_app(settings)) as client:
        codes = [
            client.post(URL, content=orjson.dumps(reading(i)), headers=auth(token))
            for i in range(3)
        ]
        assert [c.status_code for c in codes] == [200, 200, 429]
        assert int(codes[2].headers["retry-after"]) >= 1
        # another device has its own allowance
        other_answer = client.post(URL, content=orjson.dumps(reading(0)), headers=auth(other))
        assert other_answer.status_code == 200
    assert stored(fresh_db, device_id) == [0, 1]


def test_status_of_unknown_or_non_toilet(env: Env) -> None:
    assert env.client.get("/api/v1/toilets/nope/status").status_code == 404
    assert env.client.get("/api/v1/toilets/clinic-a/status").status_code == 404
    plain = env.client.get("/api/v1/toilets/toilet-d/status").json()
    assert plain["sensor"] is False and plain["online"] is False and plain["stalls_total"] is None


def test_openapi_documents_the_reading_body(env: Env) -> None:
    spec = env.client.get("/openapi.json").json()
    body = spec["paths"][URL]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"seq", "observed_at"} <= set(body["oneOf"][0]["required"])


def test_writer_waits_for_the_devices_active_in_the_last_second() -> None:
    """A transaction waits (briefly) for as many posts as devices posted within ACTIVE_S on
    this process: at least one, at most MAX_GROUP; devices gone quiet are forgotten."""
    writer = IngestWriter(Settings())
    assert writer._active_devices(now=100.0) == 1
    writer._note_post(1, 100.0)
    writer._note_post(2, 100.4)
    writer._note_post(1, 100.9)  # device 1 posts again: its last post counts
    assert writer._active_devices(now=101.0) == 2
    assert writer._active_devices(now=100.5 + ACTIVE_S) == 1  # device 2 has gone quiet
    assert list(writer._last_post) == [1]
    assert writer._active_devices(now=101.0 + ACTIVE_S) == 1 and not writer._last_post
    for device in range(MAX_GROUP + 10):
        writer._note_post(device, 200.0)
    assert writer._active_devices(now=200.5) == MAX_GROUP
