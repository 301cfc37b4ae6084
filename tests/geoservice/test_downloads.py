"""Open data: `servicemap export` in every format and /downloads, each re-ingested unchanged."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyogrio
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from geoservice.app import create_app
from geoservice.cli.main import app as cli
from geoservice.db.connection import connect
from geoservice.query import downloads
from geoservice.query.downloads import FORMATS, export_layer
from ingest.csv_cells import protect, unprotect
from ingest.pipeline import ingest_file
from layers import LANGUAGES
from tests.conftest import load_sample, settings_for

LAYERS = ["school", "clinic", "eldercare", "service_hall", "toilet"]
#: texts a spreadsheet would run as formulas, and texts that only look like protected ones
TRICKY = [
    ("inj-1", '=HYPERLINK("http://evil.example","点我")', "+86 755 8888 0000", "-1 街"),
    ("inj-2", "'=already quoted", "@SUM(1)", "''+two apostrophes"),
    ("inj-3", "+plus 公厕", "=1+1", "'plain apostrophe"),
    ("inj-4", "普通公厕", "0755-1234", "深圳市罗湖区东门街道"),
]


def stored(url: str, layer: str, source: str | None = None) -> dict[str, dict[str, Any]]:
    """Every facility of a layer (and source) as stored: all columns but the times."""
    query = (
        "SELECT *, ST_AsText(geom) AS wkt, ST_AsText(footprint) AS footprint_wkt FROM facilities"
        " WHERE layer = %s AND (%s::text IS NULL OR source = %s)"
    )
    with connect(url) as conn:
        rows = conn.execute(query, (layer, source, source)).fetchall()
    for row in rows:
        for key in ("geom", "footprint", "created_at", "updated_at"):
            row.pop(key)
    return {row["id"]: row for row in rows}


@pytest.fixture(autouse=True)
def download_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Downloads built in the test's own folder, not the project's .data/downloads."""
    folder = tmp_path / "downloads"
    monkeypatch.setattr(downloads, "CACHE_DIR", folder)
    return folder


@pytest.fixture(scope="module")
def loaded(make_db: Any, sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sample district plus toilets whose texts start like formulas (source 'inject')."""
    url: str = make_db()
    load_sample(url, sample_dir)
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [114.12 + i / 1000, 22.55]},
            "properties": {
                "source_id": sid,
                "name": name,
                "phone": phone,
                "address": address,
                "opening_hours": "Mo-Su 06:00-23:00",
                "accessible": "yes",
                "stalls_female": 3,
                "baby_change": "no",
            },
        }  # fmt: skip
        for i, (sid, name, phone, address) in enumerate(TRICKY)
    ]
    path = tmp_path_factory.mktemp("inject") / "inject.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), "utf-8")
    with connect(url) as conn:
        counts = ingest_file(conn, path, layer="toilet", source="inject")
    assert counts.inserted == len(TRICKY)
    return url


def test_protect_round_trips() -> None:
    for text in ["=1", "+1", "-1", "@a", "\tx", "'=1", "''-1", "'", "'a", "a=1", "", "普通"]:
        assert unprotect(protect(text)) == text
    assert protect("=1") == "'=1" and protect("'=1") == "''=1" and protect("a") == "a"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_layer_reingests_unchanged(loaded: str, tmp_path: Path, fmt: str) -> None:
    for layer in LAYERS:
        before = stored(loaded, layer, "sample")
        path = tmp_path / f"{layer}{FORMATS[fmt]}"
        with connect(loaded) as conn:
            written = export_layer(conn, layer, path, source="sample")
            assert written == len(before) > 0
            counts = ingest_file(conn, path, layer=layer, source="sample")
        assert (counts.inserted, counts.updated, counts.removed) == (0, 0, 0), (layer, fmt)
        assert counts.unchanged == len(before)
        assert stored(loaded, layer, "sample") == before


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_formula_texts_survive_the_round_trip(loaded: str, tmp_path: Path, fmt: str) -> None:
    before = stored(loaded, "toilet", "inject")
    path = tmp_path / f"inject{FORMATS[fmt]}"
    with connect(loaded) as conn:
        assert export_layer(conn, "toilet", path, source="inject") == len(TRICKY)
        counts = ingest_file(conn, path, layer="toilet", source="inject")
    assert (counts.inserted, counts.updated, counts.unchanged) == (0, 0, len(TRICKY))
    after = stored(loaded, "toilet", "inject")
    assert after == before
    names = {row["name"] for row in after.values()}
    assert {name for _, name, _, _ in TRICKY} == names


def test_csv_opens_safely_in_a_spreadsheet(loaded: str, tmp_path: Path) -> None:
    path = tmp_path / "toilet.csv"
    with connect(loaded) as conn:
        export_layer(conn, "toilet", path, source="inject")
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel reads UTF-8, not GBK
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert len(rows) == len(TRICKY)
    for row in rows:
        for column, value in row.items():
            if column not in ("lon", "lat"):
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (column, value)
    by_id = {row["source_id"]: row for row in rows}
    assert by_id["inj-1"]["phone"] == "'+86 755 8888 0000"
    assert by_id["inj-1"]["name"].startswith("'=HYPERLINK")
    assert by_id["inj-2"]["name"] == "''=already quoted"
    assert by_id["inj-3"]["address"] == "'plain apostrophe"  # not a formula: left alone
    assert by_id["inj-4"]["name"] == "普通公厕"
    assert {"id", "source", "source_id", "name", "opening_hours", "lon", "lat"} <= set(rows[0])
    assert "stalls_female" in rows[0] and rows[0]["accessible"] in ("true", "false")


def test_geo_formats_are_readable_by_gis_tools(loaded: str, tmp_path: Path) -> None:
    with connect(loaded) as conn:
        for fmt in ("geojson", "gpkg", "parquet"):
            path = tmp_path / f"clinic{FORMATS[fmt]}"
            n = export_layer(conn, "clinic", path)
            # (this GDAL build has no Parquet driver: GeoParquet through geopandas)
            frame = gpd.read_parquet(path) if fmt == "parquet" else pyogrio.read_dataframe(path)
            assert len(frame) == n
            assert frame.crs is not None and frame.crs.to_epsg() in (4326, None)
            assert frame.geometry.geom_type.eq("Point").all()
            assert {"name", "source", "source_id"} <= set(frame.columns)


def test_downloads_serve_exact_files(loaded: str, tmp_path: Path) -> None:
    with TestClient(create_app(settings_for(loaded))) as client:
        for layer in ("toilet", "school"):
            for ext in ("csv", "geojson", "gpkg"):
                response = client.get(f"/downloads/{layer}.{ext}")
                assert response.status_code == 200, response.text
                assert int(response.headers["content-length"]) == len(response.content)
                assert f"{layer}.{ext}" in response.headers["content-disposition"]
                etag = response.headers["etag"]
                again = client.get(f"/downloads/{layer}.{ext}", headers={"If-None-Match": etag})
                assert again.status_code == 304
        csv_body = client.get("/downloads/toilet.csv").content
        assert csv_body.startswith(b"\xef\xbb\xbf")
        rows = list(csv.DictReader(io.StringIO(csv_body.decode("utf-8-sig"))))
        with connect(loaded) as conn:
            live = conn.execute(
                "SELECT count(*) AS n FROM facilities WHERE layer = 'toilet' AND status <> 'removed'"
            ).fetchone()
        assert live is not None and len(rows) == live["n"]
        gpkg = tmp_path / "dl.gpkg"
        gpkg.write_bytes(client.get("/downloads/school.gpkg").content)
        assert len(pyogrio.read_dataframe(gpkg)) == len(stored(loaded, "school"))
        for path in ("/downloads/zoo.csv", "/downloads/toilet.xlsx", "/downloads/toilet"):
            missing = client.get(path)
            assert missing.status_code == 404 and missing.json()["detail"]


def test_a_load_rebuilds_the_download(fresh_db: str, sample_dir: Path, tmp_path: Path) -> None:
    load_sample(fresh_db, sample_dir)
    with TestClient(create_app(settings_for(fresh_db))) as client:
        first = client.get("/downloads/eldercare.geojson")
        extra = tmp_path / "extra.geojson"
        feature = {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [114.13, 22.56]},
            "properties": {"source_id": "new-1", "name": "新长者饭堂"},
        }
        extra.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
        with connect(fresh_db) as conn:
            ingest_file(conn, extra, layer="eldercare", source="extra")
        second = client.get("/downloads/eldercare.geojson")
        assert second.headers["etag"] != first.headers["etag"]
        names = [f["properties"]["name"] for f in second.json()["features"]]
        assert len(names) == len(first.json()["features"]) + 1 and "新长者饭堂" in names


def test_export_command(loaded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", loaded)
    runner = CliRunner()
    out = tmp_path / "halls.parquet"
    result = runner.invoke(cli, ["export", "--layer", "service_hall", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists() and "service_hall" in result.output
    bad = runner.invoke(
        cli, ["export", "--layer", "service_hall", "--out", str(tmp_path / "x.txt")]
    )
    assert bad.exit_code != 0 and ".csv" in bad.output
    zoo = runner.invoke(cli, ["export", "--layer", "zoo", "--out", str(tmp_path / "x.csv")])
    assert zoo.exit_code != 0 and "not a layer" in zoo.output


def test_downloads_page_in_three_languages(loaded: str) -> None:
    with TestClient(create_app(settings_for(loaded))) as client:
        pages = {lang: client.get("/downloads", params={"lang": lang}) for lang in LANGUAGES}
        for lang, page in pages.items():
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            html = page.text
            assert f'lang="{lang}"' in html and "CC BY 4.0" in html
            for layer in LAYERS:
                assert f'data-layer="{layer}"' in html
                for ext in ("csv", "geojson", "gpkg"):
                    href = f'href="/downloads/{layer}.{ext}"'
                    assert href in html
                    # the size shown is the size served
                    size = int(html.split(href)[1].split('data-bytes="')[1].split('"')[0])
                    assert size == len(client.get(f"/downloads/{layer}.{ext}").content)
        assert "开放数据下载" in pages["zh-Hans"].text
        assert "開放資料下載" in pages["zh-Hant"].text
        assert "Open data downloads" in pages["en"].text
        assert "<time datetime=" in pages["en"].text
        assert client.get("/downloads", params={"lang": "fr"}).status_code == 422
