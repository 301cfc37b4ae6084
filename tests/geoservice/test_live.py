"""Live status and ratings as the other queries see them: attach, available, H3 metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from psycopg.rows import dict_row

from geoservice.app import create_app
from geoservice.db.connection import connect
from geoservice.toilets import live
from geoservice.toilets.admin import add_device
from tests.geoservice.toilet_support import add_facilities, auth, reading, toilet_settings


@pytest.fixture(scope="module")
def live_db(make_db: Any) -> str:
    """toilet-a: online, one stall free; toilet-b: online, all occupied; toilet-c: sensor
    offline with a free stall; toilet-d: no sensor. Ratings on toilet-a and clinic-a."""
    url: str = make_db()
    add_facilities(url)
    with connect(url, autocommit=True) as conn:
        tokens = {t: add_device(conn, t, 2)[1] for t in ("toilet-a", "toilet-b", "toilet-c")}
    now = datetime.now(UTC)
    states = {"toilet-a": (False, True), "toilet-b": (True, True), "toilet-c": (False, False)}
    with TestClient(create_app(toilet_settings(url))) as client:
        for toilet, occupied in states.items():
            body = orjson.dumps(reading(0, now - timedelta(seconds=30), occupied=occupied))
            answer = client.post(
                "/api/v1/sensors/readings", content=body, headers=auth(tokens[toilet])
            )
            assert answer.status_code == 200
        for i, (facility, score) in enumerate([("toilet-a", 4), ("toilet-a", 2), ("clinic-a", 5)]):
            client.cookies.clear()
            answer = client.post(
                f"/api/v1/facilities/{facility}/ratings",
                json={"score": score},
                headers={"User-Agent": f"agent-{i}"},
            )
            assert answer.status_code == 201
    with connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE toilet_status SET last_seen = now() - interval '1 hour'"
            " WHERE facility_id = 'toilet-c'"
        )
    return url


@pytest.fixture
def client(live_db: str) -> Iterator[TestClient]:
    with TestClient(create_app(toilet_settings(live_db))) as test_client:
        yield test_client


class CountingConnection:
    """Counts the statements attach sends (batch queries, never one per row)."""

    def __init__(self, conn: psycopg.AsyncConnection[dict[str, Any]]) -> None:
        self.conn = conn
        self.statements = 0

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        self.statements += 1
        return await self.conn.execute(query, params, **kwargs)


def test_attach_adds_live_and_rating_in_one_query(live_db: str) -> None:
    async def run() -> tuple[list[dict[str, Any]], int]:
        conn = await psycopg.AsyncConnection.connect(live_db, row_factory=dict_row)
        async with conn:
            counting = CountingConnection(conn)
            rows = [
                {"id": fid, "layer": layer}
                for fid, layer in [
                    ("toilet-a", "toilet"),
                    ("toilet-b", "toilet"),
                    ("toilet-c", "toilet"),
                    ("toilet-d", "toilet"),
                    ("clinic-a", "clinic"),
                ]
            ]
            await live.attach(counting, rows, toilet_settings(live_db))  # type: ignore[arg-type]
            return rows, counting.statements

    rows, statements = asyncio.run(run())
    assert statements == 1
    by_id = {r["id"]: r for r in rows}
    a = by_id["toilet-a"]
    assert a["live"]["stalls_total"] == 2 and a["live"]["stalls_free"] == 1
    assert a["live"]["online"] is True and a["live"]["last_seen"]
    assert a["rating"] == {"average": 3.0, "count": 2, "average_30d": 3.0, "count_30d": 2}
    assert by_id["toilet-b"]["live"]["stalls_free"] == 0
    offline = by_id["toilet-c"]["live"]
    assert offline["online"] is False and offline["stalls_free"] is None
    assert by_id["toilet-d"]["live"] is None
    assert by_id["toilet-d"]["rating"]["count"] == 0
    assert "live" not in by_id["clinic-a"] and by_id["clinic-a"]["rating"]["average"] == 5.0


def test_available_filter_means_free_stall_and_online_sensor(live_db: str) -> None:
    query = sql.SQL("SELECT f.id FROM facilities f WHERE {} ORDER BY f.id").format(
        live.available_filter()
    )
    with connect(live_db) as conn:
        ids = [r["id"] for r in conn.execute(query).fetchall()]
    assert ids == ["toilet-a"]


def test_h3_metrics_sql(live_db: str) -> None:
    with pytest.raises(Exception, match="metric"):
        live.h3_metric("smell")
    for metric, expected in (("free_stalls", 1), ("avg_rating", 3.0)):
        aggregate, joins = live.h3_metric(metric)
        query = sql.SQL(
            "SELECT {aggregate} AS value FROM facilities f {joins} WHERE f.layer = 'toilet'"
        ).format(aggregate=aggregate, joins=joins)
        with connect(live_db) as conn:
            row = conn.execute(query).fetchone()
        assert row is not None and float(row["value"]) == expected


def test_live_block_in_facility_nearest_and_h3(client: TestClient) -> None:
    feature = client.get("/api/v1/facilities/toilet-a").json()
    assert feature["properties"]["live"]["stalls_free"] == 1
    assert feature["properties"]["rating"]["count"] == 2
    nearest = client.get(
        "/api/v1/nearest", params={"lat": 22.548, "lon": 114.12, "layer": "toilet", "k": 5}
    ).json()
    assert {f["id"] for f in nearest["features"]} == {
        "toilet-a",
        "toilet-b",
        "toilet-c",
        "toilet-d",
    }
    available = client.get(
        "/api/v1/nearest",
        params={"lat": 22.548, "lon": 114.12, "layer": "toilet", "available": "true"},
    ).json()
    assert [f["id"] for f in available["features"]] == ["toilet-a"]
    assert available["features"][0]["properties"]["live"]["online"] is True
    bbox = "114.10,22.54,114.15,22.57"
    free = client.get(
        "/api/v1/h3",
        params={"resolution": 5, "bbox": bbox, "layer": "toilet", "metric": "free_stalls"},
    ).json()
    assert sum(f["properties"]["value"] for f in free["features"]) == 1
    rated = client.get(
        "/api/v1/h3",
        params={"resolution": 5, "bbox": bbox, "layer": "toilet", "metric": "avg_rating"},
    ).json()
    values = [f["properties"]["value"] for f in rated["features"] if f["properties"]["value"]]
    assert values == [3.0]
