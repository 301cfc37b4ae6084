"""Identity across loads (issue 17, section 3): id columns found, re-surveys update.

Files are written by the tests (see tests/fixtures/SOURCES.md): 50 toilets surveyed twice (the
second survey 1 m east, names written with and without the 深圳市/罗湖区 prefix and with
full-width brackets), GeoJSON with feature ids, a CSV with an `ID` column.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ingest.identity import normalised_name, similar_names
from ingest.pipeline import IngestFailed
from tests.ingest.conftest import Ingest
from tests.ingest.util import checksum, rows

#: one metre east in degrees of longitude at Luohu's latitude
METRE_EAST = 1 / (111_320 * math.cos(math.radians(22.55)))


def _survey(path: Path, shift: float, *, prefixed: bool) -> Path:
    lines = ["name,lon,lat"]
    for i in range(50):
        # every fifth place sits just west of a 4-decimal rounding edge: 1 m moves it across
        lon = 114.1200 + i * 0.0010 - (0.000004 if i % 5 == 0 else 0.00005)
        lat = 22.5500 + (i % 7) * 0.0010 + 0.00005
        name = f"东门{i}号公厕(东门路)" if prefixed else f"东门{i}号公厕（东门路）"
        lines.append(f"{'深圳市罗湖区' if prefixed else ''}{name},{lon + shift:.7f},{lat:.7f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _active(url: str, source: str) -> int:
    found = rows(
        url,
        "SELECT count(*) AS n FROM facilities WHERE source = %s AND status <> 'removed'",
        (source,),
    )
    return int(found[0]["n"])


def test_resurvey_one_metre_east_updates_instead_of_inserting(
    fresh_db: str, ingest: Ingest, tmp_path: Path
) -> None:
    first = ingest(fresh_db, _survey(tmp_path / "a.csv", 0, prefixed=True), layer="toilet",
                   source="survey")  # fmt: skip
    assert first.inserted == 50
    again = _survey(tmp_path / "b.csv", METRE_EAST, prefixed=False)
    second = ingest(fresh_db, again, layer="toilet", source="survey", full=True)
    assert (second.inserted, second.updated, second.removed) == (0, 50, 0)
    assert _active(fresh_db, "survey") == 50
    before = checksum(fresh_db)
    third = ingest(fresh_db, again, layer="toilet", source="survey", full=True)
    assert (third.inserted, third.updated, third.unchanged) == (0, 0, 50)
    assert checksum(fresh_db) == before


def test_ambiguous_match_is_reported_not_guessed(
    fresh_db: str, ingest: Ingest, tmp_path: Path
) -> None:
    path = tmp_path / "a.csv"
    # two toilets of one name 6 m apart (two rounding cells), then one between them (a third)
    path.write_text("name,lon,lat\n公厕,114.12004,22.55004\n公厕,114.12010,22.55004\n")
    assert ingest(fresh_db, path, layer="toilet", source="amb").inserted == 2
    path.write_text("name,lon,lat\n公厕,114.12007,22.55006\n")
    report = ingest(fresh_db, path, layer="toilet", source="amb")
    assert report.inserted == 1
    review = [i for i in report.issues if "ambiguous match" in i.reason]
    assert len(review) == 1 and review[0].row == 2 and review[0].severity == "warning"


def _schools(path: Path, names: list[str], ids: list[object]) -> Path:
    features = [
        {"type": "Feature", "id": fid, "properties": {"name": name},
         "geometry": {"type": "Point", "coordinates": [114.12 + i / 100, 22.55]}}
        for i, (fid, name) in enumerate(zip(ids, names, strict=True))
    ]  # fmt: skip
    path.write_text(
        json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("ids", [[101, 102, 103], ["s-1", "s-2", "s-3"]])
def test_geojson_feature_ids_are_identity(
    fresh_db: str, ingest: Ingest, tmp_path: Path, ids: list[object]
) -> None:
    names = ["翠竹小学", "东门中学", "罗湖外语学校"]
    path = tmp_path / "schools.geojson"
    assert ingest(fresh_db, _schools(path, names, ids), layer="school", source="edu").inserted == 3
    renamed = ["翠竹小学", "东门中学（初中部）", "罗湖外语学校"]
    report = ingest(fresh_db, _schools(path, renamed, ids), layer="school", source="edu")
    assert (report.inserted, report.updated) == (0, 1)
    assert _active(fresh_db, "edu") == 3  # not a second active 东门中学
    stored = rows(fresh_db, "SELECT source_id FROM facilities WHERE source = 'edu' ORDER BY 1")
    assert [r["source_id"] for r in stored] == [str(i) for i in ids]


@pytest.mark.parametrize("column", ["id", "ID", "编号", "source_id"])
def test_id_column_found_and_duplicates_reported(
    fresh_db: str, ingest: Ingest, tmp_path: Path, column: str
) -> None:
    path = tmp_path / "ids.csv"
    path.write_text(
        f"{column},name,lon,lat\nA1,甲,114.12,22.55\nA2,乙,114.13,22.55\nA1,丙,114.14,22.55\n",
        encoding="utf-8",
    )
    with pytest.raises(IngestFailed) as failed:
        ingest(fresh_db, path, layer="toilet", source="ids")
    issue = failed.value.report.error_issues[0]
    assert (issue.row, issue.field, issue.value) == (4, "source_id", "A1")
    assert "duplicate id: row 2" in issue.reason
    # loading the rest still reports the duplicate, and the ids are the column's
    report = ingest(fresh_db, path, layer="toilet", source="ids", skip_invalid=True)
    assert report.inserted == 2 and report.rejected == 1
    assert any("duplicate id" in i.reason for i in report.issues)
    stored = rows(fresh_db, "SELECT source_id FROM facilities WHERE source = 'ids' ORDER BY 1")
    assert [r["source_id"] for r in stored] == ["A1", "A2"]


@pytest.mark.parametrize("ids", [[7, 8, 7], ["s-7", "s-8", "s-7"]])
def test_duplicate_geojson_feature_ids_reported(
    fresh_db: str, ingest: Ingest, tmp_path: Path, ids: list[object]
) -> None:
    # numeric ids are GDAL's FIDs, which it renumbers when they repeat: refused, not made up
    path = _schools(tmp_path / "s.geojson", ["翠竹小学", "东门中学", "罗湖外语学校"], ids)
    with pytest.raises(IngestFailed) as failed:
        ingest(fresh_db, path, layer="school", source="dup")
    report = failed.value.report
    said = [report.reason or ""] + [i.reason for i in report.error_issues]
    assert any("duplicate id" in text for text in said), said
    assert _active(fresh_db, "dup") == 0


def test_name_normalisation() -> None:
    assert normalised_name("深圳市罗湖区东门公厕（东门路）") == normalised_name("东门公厕(东门路)")
    assert normalised_name("ＡＢＣ公厕") == "abc公厕"
    assert similar_names("东门公厕（东门路）", "罗湖区东门公厕")
    assert not similar_names("东门公厕", "翠竹小学")
