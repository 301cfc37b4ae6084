"""Atomic by default, --skip-invalid, --dry-run, idempotent re-runs, --full, the scale sample."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.ingest.conftest import Ingest
from tests.ingest.util import checksum, last_run, rows, run_cli

TOILETS = {
    "source_id": ["A-1", "A-2", "A-3", "A-4"],
    "name": ["东门公厕", "翠竹公厕", "莲塘公厕", "黄贝公厕"],
    "lon": [114.1221, 114.1283, 114.1755, 114.1390],
    "lat": [22.5501, 22.5632, 22.5571, 22.5530],
    "baby_change": ["Y", "N", "1", "0"],
}


def _csv(
    tmp_path: Path, name: str = "toilets.csv", drop: int | None = None, **changes: list[object]
) -> Path:
    data = {k: list(v) for k, v in TOILETS.items()}
    data.update(changes)
    frame = pd.DataFrame(data)
    if drop is not None:
        frame = frame.drop(index=drop)
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_atomic_by_default(fresh_db: str, tmp_path: Path) -> None:
    before = checksum(fresh_db)
    path = _csv(tmp_path, lon=[114.1221, 114.1283, "east", 114.1390])
    done = run_cli(fresh_db, "ingest", str(path), "--layer", "toilet", "--source", "m")
    assert done.returncode != 0
    assert "row 4" in done.stderr and "not a number" in done.stderr
    assert checksum(fresh_db) == before
    run = last_run(fresh_db)
    assert (run["outcome"], run["read"], run["rejected"], run["inserted"]) == ("failed", 4, 1, 0)


def test_skip_invalid_loads_the_valid_rows(fresh_db: str, tmp_path: Path) -> None:
    path = _csv(tmp_path, lon=[114.1221, 114.1283, "east", 114.1390])
    report_path = tmp_path / "rejects.json"
    done = run_cli(
        fresh_db, "ingest", str(path), "--layer", "toilet", "--source", "m", "--skip-invalid",
        "--report", str(report_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert (report["inserted"], report["rejected"]) == (3, 1)
    assert report["rejects"] == [
        {"row": 4, "feature_id": None, "field": "lon", "value": "east",
         "reason": "not a number", "severity": "error"}
    ]  # fmt: skip
    stored = rows(fresh_db, "SELECT source_id, attributes FROM facilities ORDER BY 1")
    assert [r["source_id"] for r in stored] == ["A-1", "A-2", "A-4"]
    assert [r["attributes"]["baby_change"] for r in stored] == [True, False, False]


def test_dry_run_writes_nothing_but_records_the_run(fresh_db: str, tmp_path: Path) -> None:
    before = checksum(fresh_db)
    done = run_cli(fresh_db, "ingest", str(_csv(tmp_path)), "--layer", "toilet", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "dry run" in done.stderr
    assert checksum(fresh_db) == before
    run = last_run(fresh_db)
    assert (run["outcome"], run["read"], run["inserted"]) == ("dry_run", 4, 4)
    assert run["source"] == "toilets"  # the file's stem when --source is not given


def test_rerun_is_idempotent_and_changes_are_updates(
    fresh_db: str, ingest: Ingest, tmp_path: Path
) -> None:
    path = _csv(tmp_path)
    first = ingest(fresh_db, path, layer="toilet", source="m")
    assert (first.inserted, first.updated) == (4, 0)
    ids = rows(fresh_db, "SELECT id, updated_at FROM facilities ORDER BY id")
    before = checksum(fresh_db)
    again = ingest(fresh_db, path, layer="toilet", source="m")
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 4)
    assert checksum(fresh_db) == before
    changed = _csv(tmp_path, name="changed.csv", baby_change=["Y", "N", "1", "1"])
    third = ingest(fresh_db, changed, layer="toilet", source="m")
    assert (third.inserted, third.updated, third.unchanged) == (0, 1, 3)
    # ids are stable across re-ingests of the same source rows
    assert [r["id"] for r in rows(fresh_db, "SELECT id FROM facilities ORDER BY id")] == [
        r["id"] for r in ids
    ]


def test_full_marks_missing_removed_never_deletes(
    fresh_db: str, ingest: Ingest, tmp_path: Path
) -> None:
    ingest(fresh_db, _csv(tmp_path), layer="toilet", source="m")
    ingest(fresh_db, _csv(tmp_path, name="other.csv", source_id=["B-1", "B-2", "B-3", "B-4"]),
           layer="toilet", source="other")  # fmt: skip
    without_a3 = _csv(tmp_path, name="three.csv", drop=2)
    report = ingest(fresh_db, without_a3, layer="toilet", source="m", full=True)
    assert (report.removed, report.unchanged) == (1, 3)
    stored = {
        r["source_id"]: r
        for r in rows(fresh_db, "SELECT source_id, status, status_reason FROM facilities")
    }
    assert len(stored) == 8
    assert stored["A-3"]["status"] == "removed" and "m" in stored["A-3"]["status_reason"]
    assert {r["status"] for k, r in stored.items() if k != "A-3"} == {"active"}
    # without --full nothing is removed; listed again, it comes back
    back = ingest(fresh_db, _csv(tmp_path), layer="toilet", source="m", full=True)
    assert (back.updated, back.removed) == (1, 0)
    assert (
        rows(fresh_db, "SELECT status FROM facilities WHERE source_id = 'A-3'")[0]["status"]
        == "active"
    )


def test_full_with_skip_invalid_keeps_rejected_rows(
    fresh_db: str, ingest: Ingest, tmp_path: Path
) -> None:
    ingest(fresh_db, _csv(tmp_path), layer="toilet", source="m")
    broken = _csv(tmp_path, name="broken.csv", lon=[114.1221, "?", 114.1755, 114.1390])
    report = ingest(fresh_db, broken, layer="toilet", source="m", full=True, skip_invalid=True)
    # A-2's row is bad this time, but it is still listed: not removed
    assert (report.rejected, report.removed) == (1, 0)
    assert {r["status"] for r in rows(fresh_db, "SELECT status FROM facilities")} == {"active"}


@pytest.fixture(scope="module")
def scale_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scale")


def test_scale_sample_gpkg_and_csv(fresh_db: str, scale_dir: Path) -> None:
    done = run_cli(fresh_db, "sample", "--out", str(scale_dir), "--scale", "3000")
    assert done.returncode == 0, done.stderr
    gpkg = run_cli(
        fresh_db, "ingest", str(scale_dir / "facilities.gpkg"), "--layer-field", "layer",
        "--source", "scale",
    )  # fmt: skip
    assert gpkg.returncode == 0, gpkg.stderr
    run = last_run(fresh_db)
    assert (run["outcome"], run["inserted"], run["rejected"]) == ("ok", 3000, 0)
    layers = {
        r["layer"]: r["n"]
        for r in rows(fresh_db, "SELECT layer, count(*) AS n FROM facilities GROUP BY 1")
    }
    assert set(layers) == {"school", "clinic", "eldercare", "service_hall", "toilet"}
    stalls = rows(
        fresh_db, "SELECT count(*) AS n FROM facilities WHERE attributes ? 'stalls_female'"
    )
    assert stalls[0]["n"] == layers["toilet"]
    # the CSV holds the same facilities: same ids, same content → nothing to change
    before = checksum(fresh_db)
    csv = run_cli(
        fresh_db, "ingest", str(scale_dir / "facilities.csv"), "--layer-field", "layer",
        "--source", "scale",
    )  # fmt: skip
    assert csv.returncode == 0, csv.stderr
    run = last_run(fresh_db)
    assert (run["inserted"], run["updated"], run["unchanged"]) == (0, 0, 3000)
    assert checksum(fresh_db) == before


def test_small_chunks_find_duplicates_across_chunks(
    fresh_db: str, ingest: Ingest, tmp_path: Path
) -> None:
    path = _csv(tmp_path, source_id=["A-1", "A-2", "A-3", "A-1"])
    report = ingest(fresh_db, path, layer="toilet", source="m", chunk_rows=2, skip_invalid=True)
    assert report.rejected == 1 and report.inserted == 3
    assert [(i.row, i.reason) for i in report.error_issues] == [
        (5, "duplicate id: row 2 has it too")
    ]
