"""Ingest defects an adversarial test found (issue 13, section 5): bad text is a per-row error.

- A NUL character in a CSV cell failed the whole load (also with --skip-invalid) naming no row:
  PostgreSQL text cannot hold it. It is now an error of that row and field.
- A 100,000-character name loaded and made a 627 kB page: facility text fields have caps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from geoservice.db.connection import connect
from ingest.mapping import Mapping
from ingest.pipeline import IngestFailed, IngestOptions, run_ingest
from ingest.report import IngestReport
from ingest.validate import MAX_TEXT_CHARS

LUOHU = (114.09, 22.52, 114.23, 22.62)
GOOD: dict[str, list[Any]] = {
    "source_id": ["A-1", "A-2", "A-3"],
    "name": ["东门公厕", "翠竹公厕", "莲塘公厕"],
    "address": ["东门路1号", "翠竹路2号", "莲塘路3号"],
    "lon": [114.1221, 114.1283, 114.1755],
    "lat": [22.5501, 22.5632, 22.5571],
}


def _csv(tmp_path: Path, **columns: list[Any]) -> Path:
    data: dict[str, list[Any]] = {k: list(v) for k, v in GOOD.items()}
    data.update(columns)
    path = tmp_path / "input.csv"
    pd.DataFrame(data).to_csv(path, index=False)
    return path


def ingest(url: str, path: Path, *, skip_invalid: bool = False) -> IngestReport:
    mapping = Mapping().merged(layer="toilet", source="adversary")
    with connect(url) as conn:
        return run_ingest(
            conn, path, IngestOptions(mapping=mapping, skip_invalid=skip_invalid, bbox=LUOHU)
        )


def names(url: str) -> list[str]:
    with connect(url) as conn:
        rows = conn.execute("SELECT name FROM facilities ORDER BY source_id").fetchall()
    return [str(r["name"]) for r in rows]


def errors(report: IngestReport) -> list[Any]:
    return [i for i in report.issues if i.severity == "error"]


@pytest.mark.parametrize("column", ["name", "address", "source_id"])
def test_a_nul_character_is_an_error_of_its_row_and_field(
    fresh_db: str, tmp_path: Path, column: str
) -> None:
    values = list(GOOD[column])
    values[1] = values[1][:2] + "\x00" + values[1][2:]
    path = _csv(tmp_path, **{column: values})
    report = ingest(fresh_db, path, skip_invalid=True)
    [bad] = errors(report)
    assert (bad.row, bad.field) == (3, column) and "NUL" in bad.reason
    assert names(fresh_db) == ["东门公厕", "莲塘公厕"]


def test_a_nul_character_without_skip_invalid_loads_nothing_and_names_the_row(
    fresh_db: str, tmp_path: Path
) -> None:
    path = _csv(tmp_path, name=["东门公厕", "翠\x00竹", "莲塘公厕"])
    with pytest.raises(IngestFailed) as failed:
        ingest(fresh_db, path)
    report = failed.value.report
    assert "1 of 3 row(s) invalid" in str(report.reason)
    [bad] = errors(report)
    assert (bad.row, bad.field, bad.value) == (3, "name", "翠\\x00竹") and "NUL" in bad.reason
    assert names(fresh_db) == []


def test_a_very_long_name_is_an_error_of_its_row(fresh_db: str, tmp_path: Path) -> None:
    path = _csv(tmp_path, name=["东门公厕", "x" * 100_000, "莲塘公厕"])
    report = ingest(fresh_db, path, skip_invalid=True)
    [bad] = errors(report)
    assert (bad.row, bad.field) == (3, "name") and "too long" in bad.reason
    assert f"at most {MAX_TEXT_CHARS['name']:,}" in bad.reason
    assert names(fresh_db) == ["东门公厕", "莲塘公厕"]


def test_text_at_the_cap_loads(fresh_db: str, tmp_path: Path) -> None:
    path = _csv(tmp_path, name=["东门公厕", "厕" * MAX_TEXT_CHARS["name"], "莲塘公厕"])
    report = ingest(fresh_db, path)
    assert not errors(report)
    assert len(names(fresh_db)) == 3
