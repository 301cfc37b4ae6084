"""The pure parts: CRS parsing and conversion, mapping files, OSM tags, ids, text columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import prcoords
import pytest

from ingest.crs import parse_crs, parse_label, to_wgs84
from ingest.load import facility_id, facility_ids
from ingest.mapping import Mapping, load_mapping, resolve
from ingest.readers import detect_format, parse_hstore
from ingest.report import IngestError
from ingest.transform import normalised_name, text_column


@pytest.mark.parametrize(
    ("text", "expected"),
    [("EPSG:27700", "EPSG:27700"), ("epsg:4326", "EPSG:4326"), ("4547", "EPSG:4547"),
     ("gcj02", "gcj02"), ("GCJ-02", "gcj02"), ("BD09", "bd09")],
)  # fmt: skip
def test_parse_crs(text: str, expected: str) -> None:
    assert parse_crs(text).text == expected


@pytest.mark.parametrize("text", ["OSGB3", "EPSG:99999999", "wgs", ""])
def test_parse_crs_refuses_ambiguous_or_unknown(text: str) -> None:
    with pytest.raises(IngestError, match="unknown CRS"):
        parse_crs(text)


def test_labels_are_strict() -> None:
    label = parse_label("OSGB36")
    assert label is not None and label.text == "EPSG:27700"
    # pyproj would fuzzy-match this to EPSG:4277: a misspelling is not a CRS
    assert parse_label("OSGB3") is None


def test_gcj02_and_bd09_within_a_metre_of_prcoords() -> None:
    lon, lat = np.array([114.151476, 114.110948]), np.array([22.556084, 22.588227])
    got_lon, got_lat = to_wgs84(lon, lat, parse_crs("gcj02"))
    for i in range(2):
        truth = prcoords.gcj_wgs_bored(prcoords.Coords(lat[i], lon[i]))
        assert abs(got_lon[i] - truth.lon) < 1e-6 and abs(got_lat[i] - truth.lat) < 1e-6
    wgs = prcoords.Coords(22.55, 114.12)
    bd = prcoords.wgs_bd(wgs)
    back_lon, back_lat = to_wgs84(np.array([bd.lon]), np.array([bd.lat]), parse_crs("bd09"))
    assert abs(back_lon[0] - wgs.lon) < 1e-5 and abs(back_lat[0] - wgs.lat) < 1e-5
    # non-finite input stays non-finite (reported later), never an exception
    bad_lon, _ = to_wgs84(np.array([np.nan, np.inf]), np.array([1.0, 1.0]), parse_crs("gcj02"))
    assert not np.isfinite(bad_lon).any()


def test_mapping_file(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        'layer_field = "kind"\nsource = "edu"\n[layer_values]\n"小学" = "school"\n'
        '[geometry]\nwkt = "WKT"\ncrs = "EPSG:4547"\n[fields]\nname = "名称"\n'
        '[attributes]\nlevel = "学段"\n',
        encoding="utf-8",
    )
    mapping = load_mapping(path)
    assert (mapping.layer_field, mapping.source, mapping.wkt, mapping.crs) == (
        "kind", "edu", "WKT", "EPSG:4547",
    )  # fmt: skip
    assert mapping.layer_values == {"小学": "school"} and mapping.fields == {"name": "名称"}
    resolved = resolve(mapping, ["kind", "WKT", "名称", "学段", "phone"], has_geometry=False)
    assert resolved.field_columns == {"name": "名称", "phone": "phone"}
    assert resolved.attribute_columns["school"] == {"level": "学段"}
    # command-line options win over the file
    assert mapping.merged(layer="clinic").layer_field is None


@pytest.mark.parametrize(
    ("text", "message"),
    [('layer = "toilet"\nextra = 1\n', "unknown key"),
     ('layer = 5\n', "layer must be text"),
     ('layer = "toilet"\n[geometry]\nz = "Z"\n', "[geometry] unknown key"),
     ('layer = "toilet"\n[attributes]\nbaby_changes = "B"\n', "not an attribute of toilet"),
     ('layer = "toilet"\n[layer_values]\nx = "nope"\n', None),
     ("layer = ", "not valid TOML")],
)  # fmt: skip
def test_bad_mapping_files(tmp_path: Path, text: str, message: str | None) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text)
    if message is None:  # layer_values only matter with layer_field: no error
        load_mapping(path).check()
        return
    with pytest.raises(IngestError, match=message.replace("[", r"\[")):
        load_mapping(path).check()


def test_resolve_errors() -> None:
    with pytest.raises(IngestError, match="which layer"):
        resolve(Mapping(), ["lon", "lat"], has_geometry=False)
    with pytest.raises(IngestError, match="'X'"):
        resolve(Mapping(layer="toilet", x="X", y="lat"), ["lon", "lat"], has_geometry=False)


def test_hstore() -> None:
    tags = parse_hstore('"amenity"=>"toilets","name"=>"Say \\"hi\\"","note"=>"a=>b, c"')
    assert tags == {"amenity": "toilets", "name": 'Say "hi"', "note": "a=>b, c"}
    assert parse_hstore(None) == {}


def test_facility_ids_match_facility_id() -> None:
    ids = ["1", "LH-TOILET-00001", "中文", "", "x" * 500]
    assert facility_ids("src", ids) == [facility_id("src", i) for i in ids]


def test_text_column() -> None:
    assert text_column(pd.Series([60001449.0, None, 3.0])).tolist() == ["60001449", None, "3"]
    assert text_column(pd.Series([" a ", "", None])).tolist() == ["a", None, None]
    assert normalised_name("  Beach  TOILETS ") == normalised_name("beach toilets")


def test_detect_format(tmp_path: Path) -> None:
    vendor = tmp_path / "x.json"
    vendor.write_text('{"status": 0, "data": [{"id": "1"}]}{"status": 0, "data": []}')
    assert detect_format(vendor) == "vendor-json"
    geojson = tmp_path / "y.json"
    geojson.write_text('{"type": "FeatureCollection", "features": []}')
    assert detect_format(geojson) == "geojson"
    fake = tmp_path / "z.gpkg"
    fake.write_text("not a geopackage")
    with pytest.raises(IngestError, match="not a valid GeoPackage"):
        detect_format(fake)
