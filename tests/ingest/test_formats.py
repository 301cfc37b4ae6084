"""Every reader round-trips: files written with geopandas/pyogrio/pandas load back the same."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
from shapely import Polygon, points

from ingest.mapping import Mapping
from tests.ingest.conftest import Ingest
from tests.ingest.util import rows

NAMES = ["东门公厕", "翠竹智慧公厕", 'Lianhua toilet; "quoted", comma']
LON = [114.1221, 114.1283, 114.1755]
LAT = [22.5501, 22.5632, 22.5571]


def _frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "source_id": ["T-1", "T-2", "T-3"],
            "name": NAMES,
            "opening_hours": ["24/7", "Mo-Su 06:00-23:00", "dawn till dusk"],
            "accessible": ["yes", "no", None],
            "baby_change": ["是", "否", "maybe"],
            "stalls_female": [4, 6, None],
        },
        geometry=points(LON, LAT),
        crs=4326,
    )


def _check(url: str, source: str = "t") -> None:
    stored = rows(
        url,
        "SELECT source_id, name, ST_X(geom) AS lon, ST_Y(geom) AS lat, opening_hours, "
        "opening_hours_raw, accessible, attributes FROM facilities WHERE source = %s "
        "ORDER BY source_id",
        (source,),
    )
    assert [r["source_id"] for r in stored] == ["T-1", "T-2", "T-3"]
    assert [r["name"] for r in stored] == NAMES
    for r, lon, lat in zip(stored, LON, LAT, strict=True):
        assert r["lon"] == pytest.approx(lon, abs=1e-7) and r["lat"] == pytest.approx(lat, abs=1e-7)
    assert [r["accessible"] for r in stored] == [True, False, None]
    assert stored[0]["attributes"] == {"baby_change": True, "stalls_female": 4}
    # "maybe" is unknown, never a guess
    assert stored[2]["attributes"] == {}
    assert stored[2]["opening_hours"] is None and stored[2]["opening_hours_raw"] == "dawn till dusk"
    assert stored[1]["opening_hours"] == "Mo-Su 06:00-23:00"


@pytest.mark.parametrize(
    ("suffix", "driver"),
    [("geojson", "GeoJSON"), ("gpkg", "GPKG"), ("fgb", "FlatGeobuf")],
)
def test_gdal_formats(
    fresh_db: str, ingest: Ingest, tmp_path: Path, suffix: str, driver: str
) -> None:
    path = tmp_path / f"toilets.{suffix}"
    pyogrio.write_dataframe(_frame(), path, driver=driver)
    report = ingest(fresh_db, path, layer="toilet", source="t")
    assert (report.outcome, report.inserted, report.warnings) == ("ok", 3, 1)
    _check(fresh_db)


def test_geoparquet(fresh_db: str, ingest: Ingest, tmp_path: Path) -> None:
    path = tmp_path / "toilets.parquet"
    _frame().to_parquet(path)
    report = ingest(fresh_db, path, layer="toilet", source="t")
    assert report.outcome == "ok" and report.format == "geoparquet"
    _check(fresh_db)


def _shapefile(tmp_path: Path) -> Path:
    """A shapefile in CGCS2000 / 3-degree Gauss-Kruger CM 114E (its .prj says so), GB18030 text."""
    frame = _frame().rename(
        columns={"opening_hours": "hours", "baby_change": "baby", "stalls_female": "stalls_f"}
    )
    folder = tmp_path / "shp"
    folder.mkdir()
    path = folder / "toilets.shp"
    pyogrio.write_dataframe(frame.to_crs(4547), path, encoding="GB18030")
    return path


SHP_MAPPING = Mapping(
    fields={"opening_hours": "hours"},
    attributes={"baby_change": "baby", "stalls_female": "stalls_f"},
)


def test_shapefile_plain_with_prj_and_cpg(fresh_db: str, ingest: Ingest, tmp_path: Path) -> None:
    path = _shapefile(tmp_path)
    assert path.with_suffix(".prj").exists() and path.with_suffix(".cpg").exists()
    report = ingest(fresh_db, path, mapping=SHP_MAPPING, layer="toilet", source="t")
    assert report.outcome == "ok" and report.crs == "EPSG:4547"
    _check(fresh_db)


def test_shapefile_zipped(fresh_db: str, ingest: Ingest, tmp_path: Path) -> None:
    path = _shapefile(tmp_path)
    archive = tmp_path / "toilets.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for part in path.parent.iterdir():
            out.write(part, f"data/{part.name}")
    report = ingest(fresh_db, archive, mapping=SHP_MAPPING, layer="toilet", source="t")
    assert report.outcome == "ok" and report.format == "shapefile"
    _check(fresh_db)


def _table() -> pd.DataFrame:
    frame = pd.DataFrame(_frame().drop(columns="geometry"))
    frame["lon"], frame["lat"] = LON, LAT
    return frame


@pytest.mark.parametrize(
    ("encoding", "sep"),
    [("utf-8", ","), ("utf-8-sig", ","), ("gb18030", ","), ("utf-8", ";"), ("gb18030", "\t")],
)
def test_csv_lon_lat(
    fresh_db: str, ingest: Ingest, tmp_path: Path, encoding: str, sep: str
) -> None:
    path = tmp_path / "toilets.csv"
    _table().to_csv(path, index=False, encoding=encoding, sep=sep)
    if encoding == "gb18030":
        with pytest.raises(UnicodeDecodeError):
            path.read_bytes().decode("utf-8")
    if encoding == "utf-8-sig":
        assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    report = ingest(fresh_db, path, layer="toilet", source="t")
    assert report.outcome == "ok", report.to_dict()
    _check(fresh_db)


def test_csv_projected_x_y_with_crs_flag(fresh_db: str, ingest: Ingest, tmp_path: Path) -> None:
    frame = _table()
    projected = gpd.GeoSeries(points(LON, LAT), crs=4326).to_crs(3857)
    frame = frame.drop(columns=["lon", "lat"]).assign(east=projected.x, north=projected.y)
    path = tmp_path / "toilets.csv"
    frame.to_csv(path, index=False)
    report = ingest(
        fresh_db, path, layer="toilet", source="t", x="east", y="north", crs="EPSG:3857"
    )
    assert report.outcome == "ok"
    _check(fresh_db)


def test_csv_wkt_column(fresh_db: str, ingest: Ingest, tmp_path: Path) -> None:
    frame = _table()
    frame["WKT"] = [f"POINT ({x} {y})" for x, y in zip(LON, LAT, strict=True)]
    path = tmp_path / "toilets.csv"
    frame.drop(columns=["lon", "lat"]).to_csv(path, index=False)
    report = ingest(fresh_db, path, layer="toilet", source="t")
    assert report.outcome == "ok"
    _check(fresh_db)


def test_polygon_school_campus(fresh_db: str, ingest: Ingest, tmp_path: Path) -> None:
    # an L-shaped campus: its centroid lies outside it, the stored point must not
    campus = Polygon(
        [(114.120, 22.550), (114.124, 22.550), (114.124, 22.551), (114.121, 22.551),
         (114.121, 22.554), (114.120, 22.554), (114.120, 22.550)]
    )  # fmt: skip
    assert not campus.contains(campus.centroid)
    frame = gpd.GeoDataFrame(
        {"source_id": ["S-1"], "name": ["罗湖区东门小学"], "level": ["primary"]},
        geometry=[campus],
        crs=4326,
    )
    path = tmp_path / "schools.geojson"
    pyogrio.write_dataframe(frame, path)
    report = ingest(fresh_db, path, layer="school", source="edu")
    assert report.outcome == "ok"
    stored = rows(
        fresh_db,
        "SELECT ST_Contains(footprint, geom) AS inside, ST_GeometryType(footprint) AS kind, "
        "ST_Area(footprint) AS area, attributes, h3_15 FROM facilities",
    )[0]
    assert stored["inside"] is True and stored["kind"] == "ST_Polygon"
    assert stored["area"] == pytest.approx(campus.area, rel=1e-6)
    assert stored["attributes"] == {"level": "primary"}


def test_amap_responses_concatenated(fresh_db: str, ingest: Ingest, tmp_path: Path) -> None:
    pages = [
        {"status": "1", "count": "1", "info": "OK", "pois": [
            {"id": "B0FFG1", "name": "东门公厕", "location": "114.1221,22.5501", "address": "东门中路",
             "tel": [], "type": "生活服务;公共厕所;公共厕所", "typecode": "200300"}]},
        {"status": "1", "count": "1", "info": "OK", "pois": [
            {"id": "B0FFG2", "name": "翠竹公厕", "location": "114.1283,22.5632", "address": "翠竹路",
             "tel": "0755-1", "type": "生活服务;公共厕所;公共厕所", "typecode": "200300"}]},
    ]  # fmt: skip
    path = tmp_path / "amap.json"
    path.write_text(
        "\n".join(json.dumps(p, ensure_ascii=False, indent=1) for p in pages), encoding="utf-8"
    )
    report = ingest(fresh_db, path, layer="toilet", source="amap")
    assert report.outcome == "ok" and report.inserted == 2 and report.crs == "gcj02"
    stored = rows(fresh_db, "SELECT source_id, ST_X(geom) AS lon FROM facilities ORDER BY 1")
    assert [r["source_id"] for r in stored] == ["B0FFG1", "B0FFG2"]
    # converted from GCJ-02: WGS 84 lies ~500 m west of the vendor's point in Shenzhen
    assert 114.1221 - stored[0]["lon"] > 0.003


def test_bd09_csv(fresh_db: str, ingest: Ingest, tmp_path: Path) -> None:
    import prcoords

    bd = [prcoords.wgs_bd(prcoords.Coords(lat, lon)) for lon, lat in zip(LON, LAT, strict=True)]
    frame = _table().assign(lon=[c.lon for c in bd], lat=[c.lat for c in bd])
    path = tmp_path / "baidu.csv"
    frame.to_csv(path, index=False)
    report = ingest(fresh_db, path, layer="toilet", source="t", crs="bd09")
    assert report.outcome == "ok"
    stored = rows(
        fresh_db, "SELECT ST_X(geom) AS lon, ST_Y(geom) AS lat FROM facilities ORDER BY source_id"
    )
    for r, lon, lat in zip(stored, LON, LAT, strict=True):
        # within a metre (1e-5 degrees is about a metre here)
        assert abs(r["lon"] - lon) < 1e-5 and abs(r["lat"] - lat) < 1e-5


def test_generated_ids_are_stable(fresh_db: str, ingest: Ingest, tmp_path: Path) -> None:
    path = tmp_path / "toilets.csv"
    _table().drop(columns="source_id").to_csv(path, index=False)
    first = ingest(fresh_db, path, layer="toilet", source="noid")
    again = ingest(fresh_db, path, layer="toilet", source="noid")
    assert (first.inserted, again.inserted, again.updated, again.unchanged) == (3, 0, 0, 3)
    ids = [r["source_id"] for r in rows(fresh_db, "SELECT source_id FROM facilities")]
    assert len(set(ids)) == 3 and all(i.startswith("auto-") for i in ids)
