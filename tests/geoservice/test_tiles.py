"""OGC API - Tiles: Mapbox Vector Tiles read by GDAL's MVT driver against a brute-force count."""

from __future__ import annotations

import asyncio
import math
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyogrio
import pytest
from fastapi.testclient import TestClient

from geoservice.app import create_app
from geoservice.db.connection import connect, create_pool
from geoservice.query import tiles
from geoservice.query.tiles import BUFFER, DETAIL_ZOOM, EXTENT, GRID, MVT
from geoservice.toilets.admin import add_device
from ingest.pipeline import ingest_file
from layers.hours import open_now
from tests.conftest import load_sample, settings_for

LAYERS = ["school", "clinic", "eldercare", "service_hall", "toilet"]
HALF = 20037508.342789244  # half the Web Mercator world, metres


def mercator(lon: float, lat: float) -> tuple[float, float]:
    """EPSG:3857 x/y of a WGS 84 point."""
    x = math.radians(lon) * 6378137.0
    y = math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) * 6378137.0
    return x, y


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    """(col, row) of the WebMercatorQuad tile holding a point."""
    x, y = mercator(lon, lat)
    size = 2 * HALF / (1 << z)
    return int((x + HALF) // size), int((HALF - y) // size)


def in_tile(lon: float, lat: float, z: int, col: int, row: int, margin: int) -> bool:
    """Brute force: the point's tile coordinates (0..EXTENT) lie within `margin` of the tile."""
    x, y = mercator(lon, lat)
    size = 2 * HALF / (1 << z)
    u = (x - (-HALF + col * size)) / size * EXTENT
    v = ((HALF - row * size) - y) / size * EXTENT
    return -margin <= u <= EXTENT + margin and -margin <= v <= EXTENT + margin


def facilities(url: str, layer: str) -> list[dict[str, Any]]:
    """Every live facility of a layer: id, position, opening hours."""
    with connect(url) as conn:
        return conn.execute(
            "SELECT id, ST_X(geom) AS lon, ST_Y(geom) AS lat, opening_hours FROM facilities"
            " WHERE layer = %s AND status <> 'removed'",
            (layer,),
        ).fetchall()


def read_tile(tmp_path: Path, content: bytes, z: int, col: int, row: int, clip: bool) -> Any:
    """The tile as GDAL's MVT driver reads it (georeferenced by the Z/X/Y open options)."""
    path = tmp_path / f"{z}-{col}-{row}.mvt"
    path.write_bytes(content)
    return pyogrio.read_dataframe(
        path, Z=str(z), X=str(col), Y=str(row), CLIP="YES" if clip else "NO"
    )


def tile_url(layer: str, z: int, col: int, row: int) -> str:
    """The OGC API - Tiles URL of a tile ({tileMatrix}/{tileRow}/{tileCol})."""
    return f"/ogc/collections/{layer}/tiles/WebMercatorQuad/{z}/{row}/{col}"


def busiest(points: list[dict[str, Any]], z: int) -> tuple[int, int]:
    """The tile at zoom z holding the most of these points."""
    counts: dict[tuple[int, int], int] = {}
    for p in points:
        key = tile_of(p["lon"], p["lat"], z)
        counts[key] = counts.get(key, 0) + 1
    return max(counts, key=lambda k: counts[k])


@pytest.mark.parametrize("layer", ["toilet", "clinic"])
@pytest.mark.parametrize("z", [14, 15, 16])
def test_detailed_tiles_hold_every_facility(
    client: TestClient, sample_db: str, tmp_path: Path, layer: str, z: int
) -> None:
    points = facilities(sample_db, layer)
    col, row = busiest(points, z)
    # and the tiles around it: edges and the buffer beyond them
    for dc, dr in [(0, 0), (1, 0), (0, 1), (-1, -1)]:
        response = client.get(tile_url(layer, z, col + dc, row + dr))
        assert response.status_code == 200
        assert response.headers["content-type"] == MVT
        assert int(response.headers["content-length"]) == len(response.content)
        inside = {p["id"] for p in points if in_tile(p["lon"], p["lat"], z, col + dc, row + dr, 0)}
        buffered = {
            p["id"] for p in points if in_tile(p["lon"], p["lat"], z, col + dc, row + dr, BUFFER)
        }
        if not buffered:
            assert response.content == b""
            continue
        unclipped = read_tile(tmp_path, response.content, z, col + dc, row + dr, clip=False)
        assert sorted(unclipped["id"]) == sorted(buffered)
        assert len(unclipped) == len(buffered)
        if inside:
            clipped = read_tile(tmp_path, response.content, z, col + dc, row + dr, clip=True)
            assert sorted(clipped["id"]) == sorted(inside)
        assert (unclipped["layer"] == layer).all()
        assert unclipped.geometry.geom_type.eq("Point").all()
        assert {"id", "name", "layer", "status"} <= set(unclipped.columns)
        assert "count" not in unclipped.columns


@pytest.mark.parametrize("z", [9, 11, 12, 13])
def test_aggregated_tiles_count_every_facility(
    client: TestClient, sample_db: str, tmp_path: Path, z: int
) -> None:
    for layer in ("toilet", "school"):
        points = facilities(sample_db, layer)
        col, row = busiest(points, z)
        response = client.get(tile_url(layer, z, col, row))
        assert response.status_code == 200
        frame = read_tile(tmp_path, response.content, z, col, row, clip=False)
        inside = [p for p in points if in_tile(p["lon"], p["lat"], z, col, row, 0)]
        assert int(frame["count"].sum()) == len(inside)
        # one feature per non-empty cell of the grid
        cells = set()
        for p in inside:
            x, y = mercator(p["lon"], p["lat"])
            size = 2 * HALF / (1 << z)
            u = round((x - (-HALF + col * size)) / size * EXTENT)
            v = round(((HALF - row * size) - y) / size * EXTENT)
            cells.add((u // (EXTENT // GRID), v // (EXTENT // GRID)))
        assert len(frame) == len(cells)
        assert set(frame["id"]) <= {p["id"] for p in inside}
        assert z < DETAIL_ZOOM


def test_properties_match_the_api(client: TestClient, sample_db: str, tmp_path: Path) -> None:
    points = facilities(sample_db, "clinic")
    col, row = busiest(points, 14)
    response = client.get(tile_url("clinic", 14, col, row))
    frame = read_tile(tmp_path, response.content, 14, col, row, clip=False)
    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    hours = {p["id"]: p["opening_hours"] for p in points}
    for record in frame.to_dict("records"):
        expected = open_now(hours[record["id"]], "Asia/Shanghai", now)
        got = record.get("open_now")
        assert (None if got is None or got != got else bool(got)) == expected
        feature = client.get(f"/api/v1/facilities/{record['id']}").json()
        assert feature["properties"]["name"] == record["name"]
    max_age = int(response.headers["cache-control"].split("max-age=")[1])
    assert 0 <= max_age <= 60


def test_metadata_and_links(client: TestClient) -> None:
    landing = client.get("/ogc").json()
    assert any(link["href"].endswith("/ogc/tileMatrixSets") for link in landing["links"])
    conformance = client.get("/ogc/conformance").json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt" in conformance
    collection = client.get("/ogc/collections/toilet").json()
    assert any(link["href"].endswith("/collections/toilet/tiles") for link in collection["links"])
    tms = client.get("/ogc/tileMatrixSets/WebMercatorQuad").json()
    assert tms["id"] == "WebMercatorQuad" and tms["tileMatrices"][14]["matrixWidth"] == 2**14
    assert client.get("/ogc/tileMatrixSets").json()["tileMatrixSets"][0]["id"] == "WebMercatorQuad"
    for layer in LAYERS:
        sets = client.get(f"/ogc/collections/{layer}/tiles").json()["tilesets"]
        template = next(link for link in sets[0]["links"] if link["rel"] == "item")
        assert template["href"].endswith(
            f"/collections/{layer}/tiles/WebMercatorQuad/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"
        )
        tileset = client.get(f"/ogc/collections/{layer}/tiles/WebMercatorQuad").json()
        assert tileset["dataType"] == "vector" and "aggregated" in tileset["description"]
        assert tileset["layers"][0]["id"] == layer
    live = client.get("/ogc/collections/toilet/tiles/WebMercatorQuad").json()
    assert "stalls_free" in live["layers"][0]["propertiesSchema"]["properties"]


def test_the_ogc_api_definition_lists_every_ogc_route(client: TestClient) -> None:
    document = client.get("/ogc/api").json()
    routes = {
        route.path.removeprefix("/ogc") or "/"
        for route in client.app.routes  # type: ignore[attr-defined]
        if getattr(route, "path", "").startswith("/ogc") and route.path != "/ogc/api"
    }
    assert routes <= set(document["paths"])
    tile = document["paths"][
        "/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}"
    ]["get"]
    assert MVT in tile["responses"]["200"]["content"]
    names = [p["name"] for p in tile["parameters"]]
    assert names == ["collectionId", "tileMatrixSetId", "tileMatrix", "tileRow", "tileCol"]


def test_the_service_pool_runs_without_jit(sample_db: str) -> None:
    # a dense tile's plan costs more than jit_above_cost: compiling it would cost more than it saves
    async def settings_seen() -> dict[str, Any]:
        pool = create_pool(sample_db, settings_for(sample_db).db)
        await pool.open()
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute("SELECT current_setting('jit') AS jit")
                row = await cursor.fetchone()
                assert row is not None
                return dict(row)
        finally:
            await pool.close()

    assert asyncio.run(settings_seen()) == {"jit": "off"}


def test_errors(client: TestClient) -> None:
    assert client.get(tile_url("zoo", 14, 0, 0)).status_code == 404
    assert client.get("/ogc/collections/toilet/tiles/WorldCRS84Quad/1/0/0").status_code == 404
    assert client.get("/ogc/tileMatrixSets/nope").status_code == 404
    outside = client.get(tile_url("toilet", 2, 4, 0))
    assert outside.status_code == 404 and "tileCol" in outside.json()["detail"]
    for path in (
        "/ogc/collections/toilet/tiles/WebMercatorQuad/x/0/0",
        "/ogc/collections/toilet/tiles/WebMercatorQuad/99/0/0",
        "/ogc/collections/toilet/tiles/WebMercatorQuad/1/-1/0",
    ):
        response = client.get(path)
        assert response.status_code == 422, path
    empty = client.get(tile_url("toilet", 14, 0, 0))
    assert empty.status_code == 200 and empty.content == b""


def test_etag_changes_with_loads_and_sensors(
    fresh_db: str, sample_dir: Path, tmp_path: Path
) -> None:
    load_sample(fresh_db, sample_dir)
    points = facilities(fresh_db, "toilet")
    z = 16
    target = points[0]
    col, row = tile_of(target["lon"], target["lat"], z)
    path = tile_url("toilet", z, col, row)
    with TestClient(create_app(settings_for(fresh_db))) as client:
        first = client.get(path)
        etag = first.headers["etag"]
        assert "max-age" in first.headers["cache-control"]
        assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
        assert client.get(path).headers["etag"] == etag  # same content, same ETag
        cache = client.app.state.tile_cache  # type: ignore[attr-defined]
        assert ("toilet", z, col, row) in cache.entries  # served again without building

        # a load renames the facility: the tile changes
        renamed = tmp_path / "toilet.geojson"
        text = (sample_dir / "toilet.geojson").read_text(encoding="utf-8")
        with connect(fresh_db) as conn:
            name = conn.execute("SELECT name FROM facilities WHERE id = %s", (target["id"],))
            old = name.fetchone()["name"]  # type: ignore[index]
        assert text.count(f'"{old}"') == 1
        renamed.write_text(text.replace(f'"{old}"', f'"{old}（新）"'), encoding="utf-8")
        with connect(fresh_db) as conn:
            ingest_file(conn, renamed, layer="toilet", source="sample")
        after_load = client.get(path, headers={"If-None-Match": etag})
        assert after_load.status_code == 200 and after_load.headers["etag"] != etag
        frame = read_tile(tmp_path, after_load.content, z, col, row, clip=False)
        assert f"{old}（新）" in set(frame["name"])

        # a sensor reports: the tile shows its stalls and changes again
        with connect(fresh_db, autocommit=True) as conn:
            _, token = add_device(conn, target["id"], stalls=2)
        reading = {
            "seq": 1,
            "observed_at": datetime.now(UTC).isoformat(),
            "stalls": [{"id": "1", "occupied": False}, {"id": "2", "occupied": True}],
        }
        posted = client.post(
            "/api/v1/sensors/readings", json=reading, headers={"Authorization": f"Bearer {token}"}
        )
        assert posted.status_code == 200, posted.text
        after_sensor = client.get(path, headers={"If-None-Match": after_load.headers["etag"]})
        assert after_sensor.status_code == 200
        frame = read_tile(tmp_path, after_sensor.content, z, col, row, clip=False)
        mine = frame[frame["id"] == target["id"]].iloc[0]
        assert int(mine["stalls_free"]) == 1 and int(mine["stalls_total"]) == 2
        assert bool(mine["online"]) is True
        assert int(after_sensor.headers["cache-control"].split("max-age=")[1]) <= 10


def test_ogrinfo_reads_a_tile(client: TestClient, sample_db: str, tmp_path: Path) -> None:
    points = facilities(sample_db, "toilet")
    col, row = busiest(points, 15)
    content = client.get(tile_url("toilet", 15, col, row)).content
    path = tmp_path / "tile.mvt"
    path.write_bytes(content)
    out = subprocess.run(
        ["ogrinfo", "-ro", "-so", "-oo", "Z=15", "-oo", f"X={col}", "-oo", f"Y={row}",
         "-oo", "CLIP=NO", str(path), "toilet"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    expected = sum(in_tile(p["lon"], p["lat"], 15, col, row, BUFFER) for p in points)
    assert f"Feature Count: {expected}" in out


def lonlat(x: float, y: float) -> tuple[float, float]:
    """WGS 84 lon/lat of an EPSG:3857 x/y."""
    return math.degrees(x / 6378137.0), math.degrees(
        2 * math.atan(math.exp(y / 6378137.0)) - math.pi / 2
    )


#: tile units from a tile corner: on it, either side of a pixel edge, of the buffer's edge
OFFSETS = [-64.3, -63.7, -0.7, -0.3, 0.0, 0.3, 0.7, 63.7, 64.3]


def corner_points(url: str, z: int, col: int, row: int, offsets: list[float]) -> list[str]:
    """Clinics at `offsets` (tile units, both axes) from the top-left corner of a tile."""
    size = 2 * HALF / (1 << z)
    left, top = -HALF + col * size, HALF - row * size
    ids = []
    with connect(url, autocommit=True) as conn:
        for i, du in enumerate(offsets):
            for j, dv in enumerate(offsets):
                lon, lat = lonlat(left + du / EXTENT * size, top - dv / EXTENT * size)
                ids.append(f"edge-{z}-{i}-{j}")
                conn.execute(
                    "INSERT INTO facilities (id, layer, name, source, source_id, geom, h3_15,"
                    " content_hash) VALUES (%(id)s, 'clinic', %(id)s, 'test', %(id)s,"
                    " ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326), 0, 'x')",
                    {"id": ids[-1], "lon": lon, "lat": lat},
                )
    return ids


def tile_units(frame: Any, z: int, col: int, row: int) -> dict[str, tuple[int, int]]:
    """Each feature's position in tile units, from GDAL's georeferenced coordinates."""
    size = 2 * HALF / (1 << z)
    left, top = -HALF + col * size, HALF - row * size
    return {
        fid: (round((g.x - left) / size * EXTENT), round((top - g.y) / size * EXTENT))
        for fid, g in zip(frame["id"], frame.geometry, strict=True)
    }


def test_points_on_tile_edges_are_in_one_tile_and_every_buffer(
    fresh_db: str, tmp_path: Path
) -> None:
    z = 16
    col, row = tile_of(114.12, 22.55, z)
    around = [(col - 1, row - 1), (col, row - 1), (col - 1, row), (col, row)]
    with TestClient(create_app(settings_for(fresh_db))) as client:
        for c, r in around:  # kept while empty: the inserts below must show all the same
            assert client.get(tile_url("clinic", z, c, r)).content == b""
        ids = corner_points(fresh_db, z, col, row, OFFSETS)
        homes = dict.fromkeys(ids, 0)
        for c, r in around:
            response = client.get(tile_url("clinic", z, c, r))
            frame = read_tile(tmp_path, response.content, z, c, r, clip=False)
            # brute force: PostGIS's own transform and ST_AsMVTGeom with the same buffer
            with connect(fresh_db) as conn:
                expected = conn.execute(
                    "SELECT id FROM facilities WHERE ST_AsMVTGeom(ST_Transform(geom, 3857),"
                    " ST_TileEnvelope(%s, %s, %s), %s, %s, true) IS NOT NULL",
                    (z, c, r, EXTENT, BUFFER),
                ).fetchall()
            assert sorted(frame["id"]) == sorted(e["id"] for e in expected)
            for fid, (u, v) in tile_units(frame, z, c, r).items():
                assert -BUFFER <= u <= EXTENT + BUFFER and -BUFFER <= v <= EXTENT + BUFFER
                homes[fid] += 0 <= u < EXTENT and 0 <= v < EXTENT
        # every point within the buffer of the corner: in all four tiles, at home in one
        near = {f"edge-{z}-{i}-{j}" for i in range(1, 8) for j in range(1, 8)}
        assert all(homes[fid] == 1 for fid in near), {f: homes[f] for f in near if homes[f] != 1}

        # a change to facilities shows at once: renamed, removed
        with connect(fresh_db, autocommit=True) as conn:
            conn.execute("UPDATE facilities SET name = 'renamed' WHERE id = %s", (ids[40],))
            conn.execute("UPDATE facilities SET status = 'removed' WHERE id = %s", (ids[41],))
        frame = read_tile(
            tmp_path, client.get(tile_url("clinic", z, col, row)).content, z, col, row, clip=False
        )
        names = dict(zip(frame["id"], frame["name"], strict=True))
        assert names[ids[40]] == "renamed" and ids[41] not in names


def test_aggregated_counts_take_each_facility_once(fresh_db: str, tmp_path: Path) -> None:
    z = DETAIL_ZOOM - 1
    col, row = tile_of(114.12, 22.55, z)
    offsets = [-0.7, -0.3, 0.0, 0.3, 0.7, 40.0]
    ids = corner_points(fresh_db, z, col, row, offsets)
    total = 0
    with TestClient(create_app(settings_for(fresh_db))) as client:
        for c, r in [(col - 1, row - 1), (col, row - 1), (col - 1, row), (col, row)]:
            response = client.get(tile_url("clinic", z, c, r))
            frame = read_tile(tmp_path, response.content, z, c, r, clip=False)
            total += int(frame["count"].sum())
            assert all(
                0 <= u < EXTENT and 0 <= v < EXTENT for u, v in tile_units(frame, z, c, r).values()
            )
    assert total == len(ids)


def test_concurrent_requests_for_a_tile_build_it_once(
    sample_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    points = facilities(sample_db, "toilet")
    col, row = busiest(points, 15)
    built: list[int] = []
    build = tiles._build  # noqa: SLF001 - counted, then run as it is

    async def counted(*args: Any) -> tiles.Tile:
        built.append(1)
        return await build(*args)

    monkeypatch.setattr(tiles, "_build", counted)
    settings = settings_for(sample_db)

    async def burst() -> list[tiles.Tile]:
        pool = create_pool(sample_db, settings.db)
        await pool.open()
        try:
            states, cache = tiles.OpeningStates("Asia/Shanghai"), tiles.TileCache()
            # (the opening hours learnt first: learning changes the version a burst shares)
            await tiles.build_tile(pool, settings, states, "toilet", 15, col, row)
            built.clear()
            answers = await asyncio.gather(*(
                tiles.build_tile(pool, settings, states, "toilet", 15, col, row, cache=cache)
                for _ in range(6)
            ))  # fmt: skip
            assert not cache.building
            return [tile for tile, _ in answers]
        finally:
            await pool.close()

    answers = asyncio.run(burst())
    assert len(built) == 1 and all(tile is answers[0] for tile in answers)
    assert answers[0].payload and answers[0].etag == tiles.etag_of(answers[0].payload)
