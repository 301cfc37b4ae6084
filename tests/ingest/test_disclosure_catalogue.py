"""The disclosure catalogue loader: JSON and CSV, validated per row, atomic and idempotent."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from geoservice.cli.main import app
from geoservice.db.connection import connect
from ingest.disclosures import (
    CatalogueError,
    CatalogueInvalid,
    ingest_catalogue,
    read_catalogue,
    validate_catalogue,
)
from layers import CATEGORIES, DOMAINS

TABLES = ("matters", "documents", "document_matters", "manual_links")


def _catalogue(sample_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((sample_dir / "disclosures.json").read_text())
    return data


def _checksum(url: str) -> dict[str, str]:
    """A checksum of every catalogue table's content (timestamps aside)."""
    out = {}
    with psycopg.connect(url) as conn:
        for table in TABLES:
            query = psycopg.sql.SQL(
                "SELECT md5(coalesce(string_agg((to_jsonb(t) - 'updated_at')::text, '|' "
                "ORDER BY (to_jsonb(t) - 'updated_at')::text), '')) FROM {} t"
            ).format(psycopg.sql.Identifier(table))
            row = conn.execute(query).fetchone()
            assert row is not None
            out[table] = row[0]
    return out


def _runs(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT outcome, read, inserted, updated, unchanged, rejected, report "
            "FROM ingest_runs WHERE kind = 'disclosures' ORDER BY id"
        ).fetchall()


def test_sample_catalogue_is_realistic(sample_dir: Path) -> None:
    data = _catalogue(sample_dir)
    assert {m["domain"] for m in data["matters"]} == set(DOMAINS)
    assert {d["category"] for d in data["documents"]} == set(CATEGORIES)
    assert any(link.get("exclude") for link in data["links"])
    assert any(not link.get("exclude") for link in data["links"])
    # some titles are in Traditional script (羅湖區 …) while every facility name is Simplified
    assert any("羅湖區" in d["title"] for d in data["documents"])


def test_load_json_then_reload_changes_nothing(fresh_db: str, sample_dir: Path) -> None:
    data = _catalogue(sample_dir)
    with connect(fresh_db) as conn:
        first = ingest_catalogue(conn, sample_dir / "disclosures.json")
    assert first.counts["matters"]["inserted"] == len(data["matters"])
    assert first.counts["documents"]["inserted"] == len(data["documents"])
    assert first.counts["manual_links"]["inserted"] == len(data["links"])
    before = _checksum(fresh_db)
    with psycopg.connect(fresh_db) as conn:
        stamps = conn.execute("SELECT max(updated_at) FROM documents").fetchone()
    with connect(fresh_db) as conn:
        second = ingest_catalogue(conn, sample_dir / "disclosures.json")
    assert second.total("inserted") == 0 and second.total("updated") == 0
    assert second.total("removed") == 0
    assert second.counts["documents"]["unchanged"] == len(data["documents"])
    assert _checksum(fresh_db) == before
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT max(updated_at) FROM documents").fetchone() == stamps
    runs = _runs(fresh_db)
    assert [r[0] for r in runs] == ["ok", "ok"]
    assert runs[1][2] == 0 and runs[1][3] == 0 and runs[1][4] > 0


def test_changed_document_is_updated_and_its_matters_replaced(
    fresh_db: str, sample_dir: Path, tmp_path: Path
) -> None:
    data = _catalogue(sample_dir)
    with connect(fresh_db) as conn:
        ingest_catalogue(conn, sample_dir / "disclosures.json")
    changed = copy.deepcopy(data)
    doc = changed["documents"][0]
    doc["title"] = doc["title"] + "(修订)"
    doc["matter_ids"] = [changed["matters"][-1]["id"]]
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(changed, ensure_ascii=False))
    with connect(fresh_db) as conn:
        report = ingest_catalogue(conn, path)
    assert report.counts["documents"]["updated"] == 1
    assert report.counts["documents"]["inserted"] == 0
    assert report.counts["document_matters"]["inserted"] == 1
    assert report.counts["document_matters"]["removed"] == 1
    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute(
            "SELECT matter_id FROM document_matters WHERE document_id = %s", (doc["id"],)
        ).fetchall()
    assert rows == [(changed["matters"][-1]["id"],)]


def test_full_removes_what_the_catalogue_no_longer_has(
    fresh_db: str, sample_dir: Path, tmp_path: Path
) -> None:
    data = _catalogue(sample_dir)
    with connect(fresh_db) as conn:
        ingest_catalogue(conn, sample_dir / "disclosures.json")
    smaller = copy.deepcopy(data)
    gone = smaller["documents"].pop(3)
    path = tmp_path / "smaller.json"
    path.write_text(json.dumps(smaller, ensure_ascii=False))
    with connect(fresh_db) as conn:
        kept = ingest_catalogue(conn, path)
        assert kept.counts["documents"]["removed"] == 0
        full = ingest_catalogue(conn, path, full=True)
    assert full.counts["documents"]["removed"] == 1
    with psycopg.connect(fresh_db) as conn:
        assert (
            conn.execute("SELECT 1 FROM documents WHERE id = %s", (gone["id"],)).fetchone() is None
        )


def _write_csv_dir(data: dict[str, Any], out: Path, *, encoding: str, delimiter: str) -> Path:
    out.mkdir()
    with (out / "matters.csv").open("w", encoding=encoding, newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "title", "title_en", "domain", "department"],
                                delimiter=delimiter)  # fmt: skip
        writer.writeheader()
        writer.writerows(data["matters"])
    fields = ["id", "title", "url", "category", "published_at", "issuer", "doc_number",
              "matter_ids", "body"]  # fmt: skip
    with (out / "documents.csv").open("w", encoding=encoding, newline="") as handle:
        writer = csv.DictWriter(handle, fields, delimiter=delimiter, extrasaction="ignore")
        writer.writeheader()
        for doc in data["documents"]:
            writer.writerow({**doc, "matter_ids": ";".join(doc["matter_ids"])})
    with (out / "links.csv").open("w", encoding=encoding, newline="") as handle:
        writer = csv.DictWriter(handle, ["source", "source_id", "matter_id", "exclude"],
                                delimiter=delimiter)  # fmt: skip
        writer.writeheader()
        for link in data["links"]:
            writer.writerow({**link, "exclude": "是" if link.get("exclude") else "否"})
    return out


@pytest.mark.parametrize(("encoding", "delimiter"), [("utf-8-sig", ","), ("gb18030", ";")])
def test_csv_directory_loads_the_same_catalogue(
    make_db: Any, sample_dir: Path, tmp_path: Path, encoding: str, delimiter: str
) -> None:
    data = _catalogue(sample_dir)
    csv_dir = _write_csv_dir(data, tmp_path / "catalogue", encoding=encoding, delimiter=delimiter)
    from_json, from_csv = make_db(), make_db()
    with connect(from_json) as conn:
        ingest_catalogue(conn, sample_dir / "disclosures.json")
    with connect(from_csv) as conn:
        report = ingest_catalogue(conn, csv_dir)
        again = ingest_catalogue(conn, csv_dir)
    assert report.counts["documents"]["inserted"] == len(data["documents"])
    assert again.total("inserted") == 0 and again.total("updated") == 0
    assert _checksum(from_csv) == _checksum(from_json)


def _bad(data: dict[str, Any], section: str, index: int, **changes: Any) -> dict[str, Any]:
    bad = copy.deepcopy(data)
    bad[section][index].update(changes)
    return bad


BAD_ROWS = [
    ("matters", 2, {"domain": "transport"}, "domain", "employment"),
    ("matters", 4, {"title": "  "}, "title", "required"),
    ("documents", 5, {"category": "decisions"}, "category", "decision"),
    ("documents", 6, {"published_at": "2024-02-30"}, "published_at", "YYYY-MM-DD"),
    ("documents", 7, {"url": "ftp://example.org/x.pdf"}, "url", "http"),
    ("documents", 8, {"url": "javascript:alert(1)"}, "url", "http"),
    ("documents", 9, {"matter_ids": ["M-NOPE-999"]}, "matter_ids", "no matter"),
    ("documents", 10, {"title": "x" * 5000}, "title", "longer than"),
    ("links", 0, {"matter_id": "M-NOPE-1"}, "matter_id", "no matter"),
    ("links", 1, {"exclude": "maybe"}, "exclude", "true or false"),
]


@pytest.mark.parametrize(("section", "index", "changes", "field", "reason"), BAD_ROWS)
def test_bad_row_is_named_and_nothing_is_written(
    fresh_db: str, sample_dir: Path, tmp_path: Path, section: str, index: int,
    changes: dict[str, Any], field: str, reason: str,
) -> None:  # fmt: skip
    data = _catalogue(sample_dir)
    with connect(fresh_db) as conn:
        ingest_catalogue(conn, sample_dir / "disclosures.json")
    before = _checksum(fresh_db)
    bad = _bad(data, section, index, **changes)
    # a valid change in the same file must not be written either
    bad["documents"][0]["title"] = "本应不会写入的标题"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad, ensure_ascii=False))
    with connect(fresh_db) as conn, pytest.raises(CatalogueInvalid) as caught:
        ingest_catalogue(conn, path)
    problem = caught.value.problems[0]
    assert (problem.section, problem.row, problem.field) == (section, index + 1, field)
    assert reason in problem.reason
    assert f"{section} row {index + 1}" in str(caught.value)
    assert _checksum(fresh_db) == before
    runs = _runs(fresh_db)
    assert runs[-1][0] == "failed" and runs[-1][5] >= 1
    assert runs[-1][6]["rejects"][0]["field"] == field


def test_duplicate_ids_are_rejected(sample_dir: Path) -> None:
    data = _catalogue(sample_dir)
    raw = read_catalogue(sample_dir / "disclosures.json")
    raw.documents.append((len(raw.documents) + 1, dict(data["documents"][2])))
    with pytest.raises(CatalogueInvalid) as caught:
        validate_catalogue(raw)
    problem = caught.value.problems[-1]
    assert problem.field == "id" and "duplicate" in problem.reason and "row 3" in problem.reason


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"matters": [', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"matters": {"id": 1}}', "'matters' must be a list"),
        ("{}", "no 'matters'"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
    ],
)
def test_unreadable_file_is_refused(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = tmp_path / "catalogue.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(CatalogueError, match=message):
        read_catalogue(path)


def test_csv_directory_without_catalogue_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="matters.csv"):
        read_catalogue(tmp_path)


def test_cli_reports_the_bad_row_and_exits_non_zero(
    fresh_db: str, sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", fresh_db)
    data = _catalogue(sample_dir)
    bad = _bad(data, "documents", 11, category="rumour")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad, ensure_ascii=False))
    report = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["ingest-disclosures", str(path), "--report", str(report)])
    assert result.exit_code != 0
    assert "documents row 12" in result.output and "category" in result.output
    assert "nothing was written" in result.output
    assert json.loads(report.read_text())["rejects"][0]["row"] == 12
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (0,)

    ok = CliRunner().invoke(app, ["ingest-disclosures", str(sample_dir / "disclosures.json")])
    assert ok.exit_code == 0, ok.output
    assert "documents" in ok.output and "links" in ok.output
