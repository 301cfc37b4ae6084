"""Right after a 20,000-facility load, GDAL and OWSLib read every feature of every layer.

The database is loaded the way a GIS user loads it (``servicemap ingest`` of the scaled
sample, which ends with H3 cells and ANALYZE), then read over HTTP by GDAL's OAPIF driver —
the ``ogr2ogr`` on the PATH and the GDAL inside pyogrio —, by OWSLib and by QGIS's own OAPIF
provider (Debian's python3-qgis, headless), with and without a bbox. The server counts exactly up to a small cap here (500, set in its process), so both ways
of ending a read are exercised: a ``numberMatched`` that is exact (whole layers, from
``h3_counts``) and none at all (large bboxes and filters: clients follow ``next``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyogrio
import pytest
from fastapi.testclient import TestClient
from owslib.ogcapi.features import Features

from geoservice.app import create_app
from tests.conftest import settings_for
from tests.servers import free_port, stop, wait_ready

LAYERS = ["school", "clinic", "eldercare", "service_hall", "toilet"]
FACILITIES = 20_000
#: the server's MATCH_CAP in this module: below most layers' size, so counts are left out
CAP = 500
#: a box holding about a third of the district
BBOX = (114.12, 22.53, 114.19, 22.59)

_SERVER = """
import sys, uvicorn
import geoservice.query.ogc as ogc
ogc.MATCH_CAP = int(sys.argv[2])
uvicorn.run("geoservice.asgi:create", factory=True, host="127.0.0.1", port=int(sys.argv[1]),
            log_level="info", access_log=True)
"""


def _load(url: str, directory: Path, rows: int, *extra: str) -> None:
    from ingest.sample import write_scaled

    files = write_scaled(directory, rows, seed=7)
    subprocess.run(
        [sys.executable, "-m", "geoservice.cli", "ingest", str(files["gpkg"]),
         "--layer-field", "layer", "--source", "scale", "--no-link", *extra],
        env={**os.environ, "DATABASE_URL": url}, check=True, capture_output=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def scale_db(make_db: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database holding 20,000 scaled-sample facilities, loaded by the CLI moments ago."""
    url = make_db()
    _load(url, tmp_path_factory.mktemp("scale"), FACILITIES)
    return url


@pytest.fixture(scope="module")
def scale_server(scale_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server over the scale database; its access log is ``<url>`` → log file."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("log") / "access.log"
    env = {**os.environ, "DATABASE_URL": scale_db, "SERVICEMAP_PUBLIC_URL": url}
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(port), str(CAP)],
            env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    wait_ready(url, process)
    _logs[url] = log
    try:
        yield url
    finally:
        stop(process)


_logs: dict[str, Path] = {}


def _db_count(url: str, layer: str, bbox: tuple[float, ...] | None = None, where: str = "") -> int:
    query = "SELECT count(*) FROM facilities WHERE layer = %s AND status <> 'removed'"
    params: list[Any] = [layer]
    if bbox:
        query += " AND ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))"
        params += list(bbox)
    if where:
        query += f" AND ({where})"
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
        assert row is not None
        return int(row[0])


def _ogr2ogr_count(server: str, layer: str, tmp: Path, *options: str) -> int:
    """Features ``ogr2ogr`` (the GDAL on the PATH) copies from the layer to a GeoPackage."""
    out = tmp / f"{layer}-{abs(hash(options))}.gpkg"
    out.unlink(missing_ok=True)
    subprocess.run(
        ["ogr2ogr", "-f", "GPKG", str(out), f"OAPIF:{server}/ogc", layer, *options],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return int(pyogrio.read_info(out, force_feature_count=True)["features"])


def test_whole_layers_count_exactly_after_the_load(scale_server: str, scale_db: str) -> None:
    total = 0
    for layer in LAYERS:
        body = httpx.get(f"{scale_server}/ogc/collections/{layer}/items?limit=1").json()
        expected = _db_count(scale_db, layer)
        assert body["numberMatched"] == expected  # exact, also above the cap
        total += expected
    assert total == FACILITIES
    big = httpx.get(
        f"{scale_server}/ogc/collections/toilet/items", params={"bbox": ",".join(map(str, BBOX))}
    ).json()
    assert _db_count(scale_db, "toilet", BBOX) > CAP and "numberMatched" not in big


def test_ogr2ogr_reads_every_feature(scale_server: str, scale_db: str, tmp_path: Path) -> None:
    # GDAL 3.6 asks for pages of 10 unless told: the larger pages only keep the test short
    pages = ("-oo", "PAGE_SIZE=1000")
    for layer in LAYERS:
        read = _ogr2ogr_count(scale_server, layer, tmp_path, *pages)
        assert read == _db_count(scale_db, layer), layer
    spat = ("-spat", *map(str, BBOX))
    for layer in ("toilet", "school"):
        read = _ogr2ogr_count(scale_server, layer, tmp_path, *spat, *pages)
        assert read == _db_count(scale_db, layer, BBOX) > CAP, layer
    # exactly as a GIS user types it, default page size (a small layer: 10 per request)
    read = _ogr2ogr_count(scale_server, "service_hall", tmp_path)
    assert read == _db_count(scale_db, "service_hall")


def test_pyogrio_reads_every_feature(scale_server: str, scale_db: str) -> None:
    source = f"OAPIF:{scale_server}/ogc"
    for layer in LAYERS:
        frame = pyogrio.read_dataframe(source, layer=layer, columns=["name"])
        assert len(frame) == _db_count(scale_db, layer)
        assert frame.index.is_unique
        boxed = pyogrio.read_dataframe(source, layer=layer, bbox=BBOX, columns=["name"])
        assert len(boxed) == _db_count(scale_db, layer, BBOX)


def test_owslib_pages_through_every_feature(scale_server: str, scale_db: str) -> None:
    api = Features(f"{scale_server}/ogc")
    for layer in LAYERS:
        for bbox in (None, list(BBOX)):
            ids: list[str] = []
            offset = 0
            while True:
                kwargs: dict[str, Any] = {"limit": 1000, "offset": offset}
                if bbox:
                    kwargs["bbox"] = bbox
                page = api.collection_items(layer, **kwargs)
                ids += [f["id"] for f in page["features"]]
                if "numberMatched" in page:
                    assert page["numberMatched"] == _db_count(scale_db, layer, bbox and BBOX)
                if not any(link["rel"] == "next" for link in page["links"]):
                    break
                offset += 1000
            assert len(ids) == len(set(ids)) == _db_count(scale_db, layer, bbox and BBOX)


def test_gdal_pushes_where_down_as_cql2(scale_server: str, scale_db: str, tmp_path: Path) -> None:
    expected = _db_count(scale_db, "toilet", where="accessible")
    log = _logs[scale_server]
    before = log.read_text().count("filter=")
    read = _ogr2ogr_count(
        scale_server, "toilet", tmp_path, "-where", "accessible = 1", "-oo", "PAGE_SIZE=1000"
    )
    assert read == expected
    pushed = [line for line in log.read_text().splitlines() if "filter=" in line]
    assert len(pushed) > before, "the filter never reached the server"
    assert re.search(r"filter=accessible(%20|\+)(%3D|=)(%20|\+)1&", pushed[-1]), pushed[-1]
    # pyogrio's GDAL (newer) pushes down as well; the answer is the same
    frame = pyogrio.read_dataframe(
        f"OAPIF:{scale_server}/ogc", layer="toilet", where="accessible = 1", columns=["name"]
    )
    assert len(frame) == expected


def test_pending_cells_never_give_a_wrong_count(make_db: Callable[[], str], tmp_path: Path) -> None:
    url = make_db()
    _load(url, tmp_path, 2_000)
    with TestClient(create_app(settings_for(url))) as client:

        def matched(**params: Any) -> Any:
            body = client.get("/ogc/collections/toilet/items", params=params).json()
            return body.get("numberMatched")

        assert matched() == _db_count(url, "toilet")
        with psycopg.connect(url) as conn:  # queued for new cells: h3_counts lags behind
            conn.execute(
                "UPDATE facilities SET status = 'removed' WHERE id IN "
                "(SELECT id FROM facilities WHERE layer = 'toilet' ORDER BY id LIMIT 25)"
            )
            pending = conn.execute("SELECT count(*) FROM h3_pending").fetchone()
            assert pending is not None and pending[0] == 25
        assert matched() == _db_count(url, "toilet")  # counted from the rows themselves
        assert matched(bbox=",".join(map(str, BBOX))) == _db_count(url, "toilet", BBOX)


QGIS_PYTHON = "/usr/bin/python3"  # Debian's python3-qgis (installed by `make install`)
QGIS_CLIENT = Path(__file__).parents[1] / "qgis_client.py"


def _qgis(home: Path, *args: str) -> dict[str, Any]:
    """Run tests/qgis_client.py with Debian's Python (QGIS's own providers, not GDAL's)."""
    done = subprocess.run(
        [QGIS_PYTHON, str(QGIS_CLIENT), *args],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HOME": str(home)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _qgis_read(
    server: str, home: Path, layer: str, bbox: tuple[float, ...] | None = None
) -> dict[str, Any]:
    """What QGIS's OAPIF provider reads of a layer, optionally in a box."""
    return _qgis(home, "features", f"{server}/ogc", layer, *map(str, bbox or ()))


def test_qgis_reads_every_feature(scale_server: str, scale_db: str, tmp_path: Path) -> None:
    # QGIS's OAPIF provider is its own code, not GDAL's: a second, independent client
    for layer in LAYERS:
        got = _qgis_read(scale_server, tmp_path, layer)
        expected = _db_count(scale_db, layer)
        assert got["read"] == got["ids"] == got["reported"] == expected, (layer, got)
    for layer in ("toilet", "school"):
        got = _qgis_read(scale_server, tmp_path, layer, BBOX)
        expected = _db_count(scale_db, layer, BBOX)
        assert expected > CAP  # more than the server counts: QGIS must follow `next`
        assert got["read"] == got["ids"] == expected, (layer, got)


def test_qgis_draws_the_vector_tiles(scale_server: str, tmp_path: Path) -> None:
    template = f"{scale_server}/ogc/collections/toilet/tiles/WebMercatorQuad/{{z}}/{{y}}/{{x}}"
    log = _logs[scale_server]
    before = log.read_text().count("/tiles/WebMercatorQuad/")
    district = _qgis(tmp_path, "tiles", template, *map(str, BBOX))
    assert district["errors"] == [] and district["painted"] > 100, district
    requested = [line for line in log.read_text().splitlines() if "/tiles/WebMercatorQuad/" in line]
    assert len(requested) > before and all(" 200 " in line for line in requested[before:])
    # the same layer over open sea west of the district draws nothing: the pixels were the tiles'
    sea = _qgis(tmp_path, "tiles", template, "113.0", "21.0", "113.05", "21.05")
    assert sea["errors"] == [] and sea["painted"] == 0, sea
