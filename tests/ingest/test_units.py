"""The pure parts: CRS parsing and conversion, mapping files, OSM tags, ids, text columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import prcoords
import pyarrow as pa
import pytest
import shapely

from ingest.crs import parse_crs, parse_label, to_wgs84
from ingest.load import facility_id, facility_ids, point_ewkb
from ingest.mapping import Mapping, load_mapping, resolve
from ingest.pipeline import _small_first
from ingest.readers import Chunk, detect_format, parse_hstore, point_xy
from ingest.report import IngestError
from ingest.transform import (
    _distinct_rows,
    attribute_json,
    normalised_name,
    text_column,
    text_values,
)


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


def test_text_values_are_text_column_in_arrow() -> None:
    for values in (
        pd.Series([60001449.0, None, 3.0]),
        pd.Series([" a ", "", None]),
        pd.Series([1, "a", None, 2.5, True], dtype=object),
        pd.Series([True, False]),
        pd.Series([None, None], dtype=object),
    ):
        text = text_values(values)
        assert isinstance(text.dtype, pd.StringDtype)
        assert text.astype(object).where(text.notna(), None).tolist() == (
            text_column(values).tolist()
        )


def test_point_ewkb_is_what_shapely_writes() -> None:
    rng = np.random.default_rng(7)
    lon = np.r_[rng.uniform(-180, 180, 500), 0.0, -0.0, 114.123456789012]
    lat = np.r_[rng.uniform(-90, 90, 500), 90.0, -90.0, 22.5]
    expected = shapely.to_wkb(
        shapely.set_srid(shapely.points(lon, lat), 4326), hex=True, include_srid=True
    )
    assert point_ewkb(lon, lat).astype(str).tolist() == expected.tolist()


def test_point_xy_reads_plain_points_and_leaves_the_rest_to_shapely() -> None:
    points = shapely.points([[114.1, 22.5], [-0.5, 51.25], [1e-9, -89.0]])
    xy = point_xy(pa.array(shapely.to_wkb(points), pa.binary()))
    assert xy is not None and xy.tolist() == shapely.get_coordinates(points).tolist()
    # a slice of a larger array (offsets not starting at 0)
    sliced = pa.array(shapely.to_wkb(points), pa.large_binary()).slice(1, 2)
    assert point_xy(sliced) is not None and point_xy(sliced).tolist() == [  # type: ignore[union-attr]
        [-0.5, 51.25],
        [1e-9, -89.0],
    ]
    for others in (
        [shapely.Point(1, 2), shapely.LineString([(0, 0), (1, 1)])],
        [shapely.Point(1, 2), shapely.Point(1, 2, 3)],  # Z
        [shapely.Point(1, 2), shapely.Point()],  # empty: NaN coordinates
        [shapely.Point(1, 2), None],
    ):
        wkb = pa.array([None if g is None else shapely.to_wkb(g) for g in others], pa.binary())
        assert point_xy(wkb) is None
    big_endian = pa.array([shapely.to_wkb(shapely.Point(1, 2), byte_order=0)], pa.binary())
    assert point_xy(big_endian) is None


def test_distinct_rows() -> None:
    rng = np.random.default_rng(3)
    for sizes in ([4], [3, 5], [2, 7, 4]):
        codes = np.stack([rng.integers(0, size, 500) for size in sizes], axis=1)
        combos, inverse = _distinct_rows(codes, sizes)
        assert (combos[inverse] == codes).all()
        assert len(np.unique(combos, axis=0)) == len(combos)


def test_attribute_json_validates_each_distinct_plain_value_once() -> None:
    frame = pd.DataFrame({
        "_row": [2, 3, 4, 5, 6, 7],
        "_fid": [None] * 6,
        "layer": ["toilet", "toilet", "toilet", "school", "toilet", "toilet"],
        "attr.baby_change": [" yes", "yes", None, "yes", "maybe", np.nan],
        "attr.stalls_female": [3.0, 3.0, np.nan, np.nan, 2.0, 500.0],
    })  # fmt: skip
    texts, issues = attribute_json(frame, np.arange(6))
    assert [json.loads(t) if t is not None else None for t in texts] == [
        {"baby_change": True, "stalls_female": 3},
        {"baby_change": True, "stalls_female": 3},
        {},
        {},  # schools have neither attribute
        {"stalls_female": 2},  # "maybe" is unknown: left out
        None,
    ]
    assert [(i.row, i.field, i.value) for i in issues] == [(7, "attributes.stalls_female", "500.0")]


def test_small_first_splits_only_the_first_chunk() -> None:
    def chunk(n: int, first_row: int) -> Chunk:
        rows = np.arange(first_row, first_row + n)
        return Chunk(pd.DataFrame({"v": rows}), None, rows, None, np.zeros((n, 2)))

    pieces = list(_small_first(iter([chunk(100_000, 1), chunk(7, 100_001)])))
    assert [len(p.frame) for p in pieces] == [5_000, 10_000, 20_000, 65_000, 7]
    assert np.concatenate([p.rows for p in pieces]).tolist() == list(range(1, 100_008))
    for piece in pieces:
        assert piece.frame.index.equals(pd.RangeIndex(len(piece.frame)))
        assert piece.frame["v"].tolist() == piece.rows.tolist()
    assert [len(p.frame) for p in _small_first(iter([chunk(9_000, 1)]))] == [9_000]
