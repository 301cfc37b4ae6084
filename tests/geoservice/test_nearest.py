"""GET /api/v1/nearest against brute force (pyproj.Geod.inv over every facility)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import h3
import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.rows import dict_row
from pyproj import Geod

from geoservice.app import create_app
from geoservice.query.nearest import Filters, nearest_facilities
from layers.hours import open_now
from tests.conftest import settings_for

GEOD = Geod(ellps="WGS84")
LAYERS = ["school", "clinic", "eldercare", "service_hall", "toilet"]
#: Luohu's rough extent (minLon, minLat, maxLon, maxLat)
BBOX = (114.09, 22.52, 114.23, 22.62)


def insert_facilities(url: str, rows: Iterable[dict[str, Any]]) -> None:
    """Insert test facilities directly (id, layer, lon, lat and optional fields)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for i, row in enumerate(rows):
            conn.execute(
                """
                INSERT INTO facilities (id, layer, name, source, source_id, geom, h3_15,
                    content_hash, status, opening_hours, accessible)
                VALUES (%(id)s, %(layer)s, %(name)s, 'test', %(id)s,
                    ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326), %(h3)s, 'x',
                    %(status)s, %(opening_hours)s, %(accessible)s)
                """,
                {
                    "id": row.get("id", f"t{i}"),
                    "layer": row.get("layer", "toilet"),
                    "name": row.get("name", f"facility {i}"),
                    "lon": row["lon"],
                    "lat": row["lat"],
                    "h3": h3.str_to_int(h3.latlng_to_cell(row["lat"], row["lon"], 15)),
                    "status": row.get("status", "active"),
                    "opening_hours": row.get("opening_hours"),
                    "accessible": row.get("accessible"),
                },
            )


def all_facilities(url: str) -> list[dict[str, Any]]:
    """Every facility that is not removed, with coordinates."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT id, layer, status, accessible, opening_hours, ST_X(geom) AS lon, "
            "ST_Y(geom) AS lat FROM facilities WHERE status <> 'removed'"
        ).fetchall()


def brute_force(
    facilities: list[dict[str, Any]], lat: float, lon: float, k: int
) -> list[tuple[str, float]]:
    """The k nearest (id, metres) by pyproj's geodesic on WGS 84."""
    if not facilities:
        return []
    lons = np.array([f["lon"] for f in facilities])
    lats = np.array([f["lat"] for f in facilities])
    _, _, dist = GEOD.inv(np.full_like(lons, lon), np.full_like(lats, lat), lons, lats)
    order = np.argsort(dist, kind="stable")[:k]
    return [(facilities[i]["id"], float(dist[i])) for i in order]


def assert_matches(got: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    """Same length, distances within 0.5 m, ids equal except among ties."""
    assert len(got) == len(expected)
    for (_, d_got), (_, d_exp) in zip(got, expected, strict=True):
        assert abs(d_got - d_exp) <= 0.5
    if not expected:
        return
    kth = expected[-1][1]
    # ids strictly inside the k-th distance (beyond tie tolerance) must be the same set
    sure = {i for i, d in expected if d < kth - 0.5}
    assert sure <= {i for i, _ in got}


def _ask(client: TestClient, **params: Any) -> list[tuple[str, float]]:
    response = client.get("/api/v1/nearest", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/geo+json")
    features = response.json()["features"]
    distances = [f["properties"]["distance_m"] for f in features]
    assert distances == sorted(distances)
    return [(f["id"], f["properties"]["distance_m"]) for f in features]


def _points(rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
    lons = rng.uniform(BBOX[0], BBOX[2], n)
    lats = rng.uniform(BBOX[1], BBOX[3], n)
    # the district's edge and just outside it: corners and far points
    edge = [
        (BBOX[1], BBOX[0]),
        (BBOX[3], BBOX[2]),
        (BBOX[1] - 0.05, BBOX[2] + 0.05),
        (BBOX[3] + 0.02, (BBOX[0] + BBOX[2]) / 2),
        (22.5, 114.0),
    ]
    return [(float(a), float(o)) for a, o in zip(lats, lons, strict=True)] + edge


def test_nearest_equals_brute_force_every_layer(client: TestClient, sample_db: str) -> None:
    facilities = all_facilities(sample_db)
    rng = np.random.default_rng(4)
    for lat, lon in _points(rng, 12):
        for layer in LAYERS:
            subset = [f for f in facilities if f["layer"] == layer]
            got = _ask(client, lat=lat, lon=lon, layer=layer, k=5)
            assert_matches(got, brute_force(subset, lat, lon, 5))
        got = _ask(client, lat=lat, lon=lon, k=20)
        assert_matches(got, brute_force(facilities, lat, lon, 20))


def test_several_layers_and_max_distance(client: TestClient, sample_db: str) -> None:
    facilities = [f for f in all_facilities(sample_db) if f["layer"] in ("school", "clinic")]
    lat, lon = 22.55, 114.12
    got = _ask(client, lat=lat, lon=lon, layer="school,clinic", k=100, max_distance_m=900)
    expected = [p for p in brute_force(facilities, lat, lon, 100) if p[1] <= 900]
    assert_matches(got, expected)
    assert got and all(d <= 900 for _, d in got)
    repeated = client.get(
        "/api/v1/nearest",
        params=[("lat", lat), ("lon", lon), ("layer", "school"), ("layer", "clinic")],
    ).json()
    assert {f["properties"]["layer"] for f in repeated["features"]} <= {"school", "clinic"}


def test_clustered_building_and_removed(make_db: Callable[[], str]) -> None:
    url = make_db()
    rng = np.random.default_rng(7)
    # 40 facilities in one building (within ~5 m) and 60 spread around it
    building = [
        {"id": f"b{i}", "lon": 114.1200 + rng.normal(0, 2e-5), "lat": 22.5500 + rng.normal(0, 2e-5)}
        for i in range(40)
    ]
    around = [
        {"id": f"a{i}", "lon": 114.12 + rng.normal(0, 0.01), "lat": 22.55 + rng.normal(0, 0.01)}
        for i in range(60)
    ]
    same_spot = [{"id": f"s{i}", "lon": 114.1300, "lat": 22.5600} for i in range(6)]
    nearest_removed = {"id": "gone", "lon": 114.12, "lat": 22.55, "status": "removed"}
    closed = {"id": "shut", "lon": 114.12001, "lat": 22.55001, "status": "temporarily_closed"}
    insert_facilities(url, [*building, *around, *same_spot, nearest_removed, closed])
    facilities = all_facilities(url)
    with TestClient(create_app(settings_for(url))) as client:
        for lat, lon in [(22.55, 114.12), (22.5501, 114.1199), (22.56, 114.13), (22.7, 114.3)]:
            for k in (1, 5, 30, 100):
                assert_matches(
                    _ask(client, lat=lat, lon=lon, k=k), brute_force(facilities, lat, lon, k)
                )
        body = client.get("/api/v1/nearest", params={"lat": 22.55, "lon": 114.12, "k": 50}).json()
        ids = [f["id"] for f in body["features"]]
        assert "gone" not in ids
        statuses = {f["id"]: f["properties"]["status"] for f in body["features"]}
        assert statuses["shut"] == "temporarily_closed"
        tied = _ask(client, lat=22.56, lon=114.13, k=6)
        assert {i for i, _ in tied} == {f"s{i}" for i in range(6)}
        assert all(d == 0 for _, d in tied)


def test_worldwide_points_need_widening(make_db: Callable[[], str]) -> None:
    """Far apart facilities where sphere and ellipsoid orders differ; exact ranking holds."""
    url = make_db()
    rng = np.random.default_rng(11)
    lats = np.degrees(np.arcsin(rng.uniform(-0.99, 0.99, 400)))
    lons = rng.uniform(-180, 180, 400)
    insert_facilities(
        url,
        [
            {"id": f"w{i}", "lon": float(o), "lat": float(a)}
            for i, (a, o) in enumerate(zip(lats, lons, strict=True))
        ],
    )
    facilities = all_facilities(url)
    with TestClient(create_app(settings_for(url))) as client:
        for lat, lon in [(0.0, 0.0), (60.0, 30.0), (-45.0, 170.0), (89.0, -120.0), (22.55, 114.12)]:
            for k in (1, 7, 100):
                assert_matches(
                    _ask(client, lat=lat, lon=lon, k=k), brute_force(facilities, lat, lon, k)
                )


def test_filters_accessible_and_open_now(make_db: Callable[[], str]) -> None:
    url = make_db()
    rng = np.random.default_rng(3)
    hours = ["Mo-Fr 09:00-17:00", "24/7", None, "not a valid expression", "Sa-Su 10:00-12:00"]
    rows = [
        {
            "id": f"f{i}",
            "lon": 114.12 + rng.normal(0, 0.01),
            "lat": 22.55 + rng.normal(0, 0.01),
            "accessible": [True, False, None][i % 3],
            "opening_hours": hours[i % len(hours)],
        }
        for i in range(150)
    ]
    insert_facilities(url, rows)
    facilities = all_facilities(url)
    settings = settings_for(url)
    tz = settings.district.timezone
    # Wednesday 10:00 and Sunday 11:00 and Wednesday 20:00 local time
    moments = [
        datetime(2024, 5, 15, 10, 0, tzinfo=ZoneInfo(tz)),
        datetime(2024, 5, 19, 11, 0, tzinfo=ZoneInfo(tz)),
        datetime(2024, 5, 15, 20, 0, tzinfo=ZoneInfo(tz)),
    ]

    async def run(filters: Filters, now: datetime) -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
            return await nearest_facilities(conn, 22.55, 114.12, filters, settings, now=now)

    for now in moments:
        open_ones = [f for f in facilities if open_now(f["opening_hours"], tz, now) is True]
        got = asyncio.run(run(Filters(layers=["toilet"], k=10, open_now=True), now))
        assert_matches(
            [(r["id"], r["distance_m"]) for r in got], brute_force(open_ones, 22.55, 114.12, 10)
        )
    accessible = [f for f in facilities if f["accessible"] is True]
    got = asyncio.run(run(Filters(layers=["toilet"], k=15, accessible=True), moments[0]))
    assert_matches(
        [(r["id"], r["distance_m"]) for r in got], brute_force(accessible, 22.55, 114.12, 15)
    )
    with TestClient(create_app(settings)) as client:
        body = client.get(
            "/api/v1/nearest",
            params={"lat": 22.55, "lon": 114.12, "k": 20, "open_now": "true", "accessible": "true"},
        ).json()
        for feature in body["features"]:
            assert feature["properties"]["open_now"] is True
            assert feature["properties"]["accessible"] is True


def test_available_only_toilets_with_free_stalls(client: TestClient) -> None:
    body = client.get(
        "/api/v1/nearest", params={"lat": 22.55, "lon": 114.12, "available": "true"}
    ).json()
    for feature in body["features"]:
        assert feature["properties"]["layer"] == "toilet"
        live = feature["properties"]["live"]
        assert live["online"] is True and live["stalls_free"] > 0


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"lat": 22.5, "lon": 114.1, "k": 101}, "k"),
        ({"lat": 22.5, "lon": 114.1, "k": 0}, "k"),
        ({"lat": 91, "lon": 114.1}, "lat"),
        ({"lat": 22.5, "lon": -181}, "lon"),
        ({"lat": "nan", "lon": 114.1}, "lat"),
        ({"lat": 22.5, "lon": "east"}, "lon"),
        ({"lon": 114.1}, "lat"),
        ({"lat": 22.5, "lon": 114.1, "layer": "bakery"}, "layer"),
        ({"lat": 22.5, "lon": 114.1, "max_distance_m": -1}, "max_distance_m"),
        ({"lat": 22.5, "lon": 114.1, "max_distance_m": 1e12}, "max_distance_m"),
    ],
)
def test_bad_parameters_are_422_naming_them(
    client: TestClient, params: dict[str, Any], named: str
) -> None:
    response = client.get("/api/v1/nearest", params=params)
    assert response.status_code == 422
    assert named in response.json()["detail"]
