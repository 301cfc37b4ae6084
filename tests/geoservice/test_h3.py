"""GET /api/v1/h3: cells derived in SQL equal h3's, counts equal a geopandas + h3 recount."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import geopandas as gpd
import h3
import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from shapely.geometry import Polygon, box
from sqlalchemy import create_engine

from geoservice.app import create_app
from geoservice.db.connection import sqlalchemy_url
from tests.conftest import settings_for
from tests.geoservice.test_nearest import insert_facilities

DISTRICT = (114.09, 22.52, 114.23, 22.62)


def _live_points(url: str) -> gpd.GeoDataFrame:
    engine = create_engine(sqlalchemy_url(url))
    try:
        return gpd.read_postgis(
            "SELECT id, layer, geom FROM facilities WHERE status <> 'removed'",
            engine,
            geom_col="geom",
        )
    finally:
        engine.dispose()


def _worldwide_points() -> list[tuple[float, float]]:
    """Random points over the globe and next to the 12 pentagons (their children skip a digit)."""
    rng = np.random.default_rng(1)
    lats = np.degrees(np.arcsin(rng.uniform(-0.999, 0.999, 300)))
    lons = rng.uniform(-180, 180, 300)
    pentagons = [h3.cell_to_latlng(p) for p in h3.get_pentagons(0)]
    points = [(float(a), float(o)) for a, o in zip(lats, lons, strict=True)]
    return points + [(a + 1e-4, o + 1e-4) for a, o in pentagons]


def test_stored_counts_equal_latlng_to_cell_everywhere(make_db: Callable[[], str]) -> None:
    """Random points worldwide and the pentagons: every counted resolution's cells are h3's."""
    url = make_db()
    points = _worldwide_points()
    insert_facilities(url, [{"id": f"p{i}", "lat": a, "lon": o} for i, (a, o) in enumerate(points)])
    with TestClient(create_app(settings_for(url))) as client:
        assert (
            client.get("/api/v1/h3", params={"resolution": 0, "bbox": "0,0,0.1,0.1"}).status_code
            == 200
        )
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT resolution, cell, count FROM h3_counts").fetchall()
        queued = conn.execute("SELECT count(*) FROM h3_pending").fetchone()
    assert queued == (0,)
    expected = Counter(
        (r, h3.str_to_int(h3.latlng_to_cell(lat, lon, r))) for lat, lon in points for r in range(11)
    )
    assert {(r, cell): n for r, cell, n in stored} == dict(expected)


# spots where a cluster of facilities lies: (lat, lon)
_EDGES = {
    "antimeridian east": (-16.5, 179.99999),
    "antimeridian west": (-16.5, -179.99999),
    "north pole": (89.999, 10.0),
    "south pole": (-89.999, -120.0),
    "district": (22.55, 114.12),
}


@pytest.mark.parametrize("spot", sorted(_EDGES))
@pytest.mark.parametrize("resolution", [11, 13, 15])
def test_fine_cells_count_all_their_facilities(
    make_db: Callable[[], str], spot: str, resolution: int
) -> None:
    """Bucketed from the facilities: a cell the bbox only grazes still counts its facilities
    outside the bbox, across the antimeridian and at the poles too."""
    url = make_db()
    lat, lon = _EDGES[spot]
    # a bbox about a cell wide around the spot, inside -180..180; facilities scattered 3 wide
    edge = h3.average_hexagon_edge_length(resolution, unit="m") / 111_000
    stretch = 1 / np.cos(np.radians(lat))
    bbox = (
        max(lon - edge * stretch, -180.0), lat - edge, min(lon + edge * stretch, 180.0), lat + edge
    )  # fmt: skip
    rng = np.random.default_rng(resolution)
    lats = lat + rng.uniform(-3 * edge, 3 * edge, 300)
    lons = (lon + rng.uniform(-3 * edge, 3 * edge, 300) * stretch + 180) % 360 - 180
    rows: list[dict[str, Any]] = [
        {"id": f"f{i}", "lat": float(a), "lon": float(o)}
        for i, (a, o) in enumerate(zip(lats, lons, strict=True))
    ]
    insert_facilities(url, [*rows, {"id": "gone", "lat": lat, "lon": lon, "status": "removed"}])
    with TestClient(create_app(settings_for(url))) as client:
        response = client.get(
            "/api/v1/h3", params={"resolution": resolution, "bbox": ",".join(map(str, bbox))}
        )
    assert response.status_code == 200, response.text
    overlapping = set(cells_over_bbox(bbox, resolution))
    recount = Counter(h3.latlng_to_cell(r["lat"], r["lon"], resolution) for r in rows)
    expected = {cell: n for cell, n in recount.items() if cell in overlapping}
    got = {f["properties"]["h3"]: f["properties"]["count"] for f in response.json()["features"]}
    assert got == expected and got
    # the bbox grazes cells whose facilities lie outside it: they are counted too
    inside = box(*bbox)
    outside = [
        r for r in rows
        if h3.latlng_to_cell(r["lat"], r["lon"], resolution) in got
        and not inside.covers(gpd.points_from_xy([r["lon"]], [r["lat"]])[0])
    ]  # fmt: skip
    assert outside


def test_fine_resolutions_need_no_sync(make_db: Callable[[], str]) -> None:
    """Queued facilities are bucketed where they are now at resolutions 11-15 (no 503)."""
    url = make_db()
    insert_facilities(url, [{"id": "a", "lon": 114.12, "lat": 22.55}])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE facilities SET geom = ST_SetSRID(ST_MakePoint(114.1201, 22.5501), 4326)"
        )
        queued = conn.execute("SELECT count(*) FROM h3_pending").fetchone()
    assert queued == (1,)
    with TestClient(create_app(settings_for(url))) as client:
        body = client.get(
            "/api/v1/h3", params={"resolution": 14, "bbox": "114.119,22.549,114.121,22.551"}
        ).json()
    assert [f["properties"]["h3"] for f in body["features"]] == [
        h3.latlng_to_cell(22.5501, 114.1201, 14)
    ]


def test_facility_cells_equal_latlng_to_cell(client: TestClient, sample_db: str) -> None:
    with psycopg.connect(sample_db) as conn:
        rows = conn.execute("SELECT ST_Y(geom), ST_X(geom), h3_15 FROM facilities").fetchall()
    for resolution in range(16):
        body = client.get(
            "/api/v1/h3", params={"resolution": resolution, "bbox": "114.0,22.4,114.3,22.7"}
        )
        if body.status_code == 422:
            assert "resolution" in body.json()["detail"]
            continue
        got = {f["properties"]["h3"] for f in body.json()["features"]}
        expected = {h3.latlng_to_cell(lat, lon, resolution) for lat, lon, _ in rows}
        assert got == expected


@pytest.mark.parametrize("resolution", [5, 7, 9, 10])
def test_counts_equal_geopandas_recount(
    client: TestClient, sample_db: str, resolution: int
) -> None:
    points = _live_points(sample_db)
    bbox = (114.10, 22.53, 114.16, 22.58)
    # the hexagons overlapping the bbox, each counting all of its facilities
    overlapping = set(cells_over_bbox(bbox, resolution))
    for layer in (None, "toilet", "school,clinic"):
        subset = points if layer is None else points[points["layer"].isin(layer.split(","))]
        recount = Counter(h3.latlng_to_cell(p.y, p.x, resolution) for p in subset.geometry)
        expected = {cell: n for cell, n in recount.items() if cell in overlapping}
        params: dict[str, Any] = {"resolution": resolution, "bbox": ",".join(map(str, bbox))}
        if layer:
            params["layer"] = layer
        response = client.get("/api/v1/h3", params=params)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/geo+json")
        features = response.json()["features"]
        got = {f["properties"]["h3"]: f["properties"]["count"] for f in features}
        assert got == expected and got
        for feature in features:
            assert feature["properties"]["value"] == feature["properties"]["count"]
            ring = feature["geometry"]["coordinates"][0]
            assert feature["geometry"]["type"] == "Polygon" and ring[0] == ring[-1]
            hexagon = Polygon(ring)
            assert hexagon.intersects(box(*bbox))
            lat, lon = h3.cell_to_latlng(feature["properties"]["h3"])
            assert hexagon.contains(gpd.points_from_xy([lon], [lat])[0])


def cells_over_bbox(bbox: tuple[float, float, float, float], resolution: int) -> list[str]:
    """h3's own list of cells overlapping a bbox."""
    min_lon, min_lat, max_lon, max_lat = bbox
    shape = h3.LatLngPoly(
        [(min_lat, min_lon), (min_lat, max_lon), (max_lat, max_lon), (max_lat, min_lon)]
    )
    return list(h3.h3shape_to_cells_experimental(shape, resolution, contain="overlap"))


def test_counts_follow_changes(make_db: Callable[[], str]) -> None:
    url = make_db()
    insert_facilities(
        url, [{"id": "m", "lon": 114.12, "lat": 22.55}, {"id": "n", "lon": 114.15, "lat": 22.57}]
    )
    with TestClient(create_app(settings_for(url))) as client:

        def counts() -> dict[str, int]:
            body = client.get("/api/v1/h3", params={"resolution": 9}).json()
            return {f["properties"]["h3"]: f["properties"]["count"] for f in body["features"]}

        assert counts() == {
            h3.latlng_to_cell(22.55, 114.12, 9): 1,
            h3.latlng_to_cell(22.57, 114.15, 9): 1,
        }
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE facilities SET geom = ST_SetSRID(ST_MakePoint(114.2, 22.6), 4326) WHERE id = 'm'"
            )
            conn.execute("UPDATE facilities SET status = 'removed' WHERE id = 'n'")
        assert counts() == {h3.latlng_to_cell(22.6, 114.2, 9): 1}
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE facilities SET status = 'active' WHERE id = 'n'")
            conn.execute("DELETE FROM facilities WHERE id = 'm'")
        assert counts() == {h3.latlng_to_cell(22.57, 114.15, 9): 1}


def test_default_bbox_is_the_district(client: TestClient, sample_db: str) -> None:
    points = _live_points(sample_db)
    overlapping = set(cells_over_bbox(DISTRICT, 8))
    cells = [h3.latlng_to_cell(p.y, p.x, 8) for p in points.geometry]
    body = client.get("/api/v1/h3", params={"resolution": 8}).json()
    total = sum(f["properties"]["count"] for f in body["features"])
    assert total == sum(1 for c in cells if c in overlapping) > 0


def test_removed_facilities_are_not_counted(make_db: Callable[[], str]) -> None:
    url = make_db()
    insert_facilities(
        url,
        [
            {"id": "a", "lon": 114.12, "lat": 22.55},
            {"id": "b", "lon": 114.12, "lat": 22.55, "status": "removed"},
            {"id": "c", "lon": 114.12, "lat": 22.55, "status": "temporarily_closed"},
        ],
    )
    with TestClient(create_app(settings_for(url))) as client:
        body = client.get(
            "/api/v1/h3", params={"resolution": 12, "bbox": "114.11,22.54,114.13,22.56"}
        ).json()
    assert [f["properties"]["count"] for f in body["features"]] == [2]
    assert body["features"][0]["properties"]["h3"] == h3.latlng_to_cell(22.55, 114.12, 12)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"resolution": 16}, "resolution"),
        ({"resolution": -1}, "resolution"),
        ({}, "resolution"),
        ({"resolution": 12}, "resolution"),  # the whole district at res 12: too many hexagons
        ({"resolution": 15, "bbox": "114.0,22.0,115.0,23.0"}, "resolution"),
        ({"resolution": 5, "bbox": "0,0,50,50"}, "bbox"),
        ({"resolution": 5, "bbox": "1,2,3"}, "bbox"),
        ({"resolution": 5, "bbox": "3,2,1,4"}, "bbox"),
        ({"resolution": 5, "layer": "zoo"}, "layer"),
        ({"resolution": 5, "metric": "sum"}, "metric"),
    ],
)
def test_bad_parameters_are_422_naming_them(
    client: TestClient, params: dict[str, Any], named: str
) -> None:
    response = client.get("/api/v1/h3", params=params)
    assert response.status_code == 422
    assert named in response.json()["detail"]


def test_small_bbox_allows_fine_resolution(client: TestClient) -> None:
    response = client.get(
        "/api/v1/h3", params={"resolution": 15, "bbox": "114.120,22.550,114.121,22.551"}
    )
    assert response.status_code == 200


def test_toilet_metrics_never_500(client: TestClient) -> None:
    for metric in ("avg_rating", "free_stalls"):
        response = client.get(
            "/api/v1/h3", params={"resolution": 8, "layer": "toilet", "metric": metric}
        )
        # 422 naming the metric until the smart-toilet issue provides it
        assert response.status_code in (200, 422)
        if response.status_code == 422:
            assert "metric" in response.json()["detail"]
        else:
            for feature in response.json()["features"]:
                assert feature["properties"]["count"] >= 1
