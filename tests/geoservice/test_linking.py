"""Linking facilities to matters and documents: rules, name matching (both scripts), manual."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from geoservice.cli.main import app
from geoservice.db.connection import connect
from geoservice.disclosures import linking
from geoservice.disclosures.linking import (
    NameMatcher,
    ScriptNormaliser,
    effective_link_counts,
    link_all,
    rule_links,
    short_names,
)
from tests.conftest import load_sample


def _catalogue(sample_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((sample_dir / "disclosures.json").read_text())
    return data


def _one(url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _links(url: str, facility_id: str) -> dict[str, str]:
    """matter id -> method of every link in force for a facility."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT matter_id, method FROM facility_matter_links WHERE facility_id = %s",
            (facility_id,),
        ).fetchall()
    return dict(rows)


def _facility(url: str, source_id: str) -> str:
    facility_id = _one(
        url, "SELECT id FROM facilities WHERE source = 'sample' AND source_id = %s", source_id
    )
    assert facility_id is not None
    return str(facility_id)


def _matter(data: dict[str, Any], title: str) -> str:
    return next(m["id"] for m in data["matters"] if m["title"] == title)


def test_normaliser_converts_traditional_and_full_width() -> None:
    normalise = ScriptNormaliser()
    assert normalise("羅湖區洪湖實驗學校（２）") == "罗湖区洪湖实验学校(2)"
    assert normalise("罗湖区洪湖实验学校") == "罗湖区洪湖实验学校"
    assert normalise("Luohu PARK Toilet") == "luohu park toilet"


def test_short_names_drop_city_and_district() -> None:
    assert short_names("深圳市罗湖区翠竹小学") == ["罗湖区翠竹小学", "翠竹小学"]
    assert short_names("罗湖翠竹诊所") == ["翠竹诊所"]
    assert short_names("翠竹公厕") == []


def test_matcher_prefers_the_longest_name_and_skips_generic_ones() -> None:
    normalise = ScriptNormaliser()
    facilities = [
        ("a", "翠竹公厕", None),
        ("b", "翠竹公园公厕", None),
        ("c", "翠竹公厕(2)", None),
        ("d", "罗湖区翠竹小学", "Cuizhu Primary School"),
        ("e", "公厕", None),
    ]
    matcher = NameMatcher(facilities, normalise)
    found = lambda text: sorted({m[0] for m in matcher.match(normalise(text))})  # noqa: E731
    assert found("翠竹公园公厕改造公告") == ["b"]
    assert found("翠竹公厕(2)保洁安排") == ["c"]
    assert found("翠竹公厕保洁安排") == ["a"]
    assert found("翠竹小學家長會") == ["d"]
    assert found("Notice to cuizhu primary school parents") == ["d"]
    assert found("全区公厕保洁安排") == []


def test_rules_follow_layer_domains_and_keywords() -> None:
    normalise = ScriptNormaliser()
    matters = [
        ("m1", "公厕管理", "urban_management"),
        ("m2", "违法建筑查处", "urban_management"),
        ("m3", "學位申請", "compulsory_education"),
        ("m4", "医疗保险参保登记", "social_insurance"),
    ]
    rules = {(layer, matter) for layer, matter, _, _ in rule_links(matters, normalise)}
    assert ("toilet", "m1") in rules
    assert ("toilet", "m2") not in rules  # a domain of toilets, but no toilet keyword
    assert ("school", "m3") in rules  # Traditional title, Simplified keyword
    assert ("service_hall", "m4") in rules
    assert ("clinic", "m4") not in rules  # "医疗" is a clinic word, but not its domain


def test_rule_links_on_the_sample(sample_db: str, sample_dir: Path) -> None:
    data = _catalogue(sample_dir)
    school = _one(sample_db, "SELECT id FROM facilities WHERE layer = 'school' ORDER BY id LIMIT 1")
    toilet = _one(sample_db, "SELECT id FROM facilities WHERE layer = 'toilet' ORDER BY id LIMIT 1")
    hall = _one(sample_db, "SELECT id FROM facilities WHERE layer = 'service_hall' LIMIT 1")
    school_links, toilet_links = _links(sample_db, school), _links(sample_db, toilet)
    hall_links = _links(sample_db, hall)
    enrolment = _matter(data, "义务教育阶段学校招生")
    assert school_links.get(enrolment) in ("rule", "name_match")
    assert _matter(data, "公厕管理") in toilet_links
    assert _matter(data, "河道水质") not in toilet_links
    assert _matter(data, "违法建筑查处") not in toilet_links
    assert not any(m.startswith("M-HEA") for m in toilet_links)
    for title in ("户口迁入", "社保卡办理", "最低生活保障", "就业登记", "高龄老人津贴"):
        assert _matter(data, title) in hall_links, title
    assert _matter(data, "招聘会") not in hall_links


def test_traditional_title_links_to_the_simplified_name(sample_db: str, sample_dir: Path) -> None:
    data = _catalogue(sample_dir)
    with psycopg.connect(sample_db) as conn:
        names = {row[0]: row[1] for row in conn.execute("SELECT name, id FROM facilities")}
    normalise = ScriptNormaliser()
    traditional = [d for d in data["documents"] if normalise(d["title"]) != d["title"].casefold()]
    assert len(traditional) >= 5
    for doc in traditional:
        simplified = normalise(doc["title"])
        named = [n for n in names if n in simplified]
        assert named, doc["title"]
        name = max(named, key=len)
        assert name not in doc["title"]  # the title really is in the other script
        row = _one(
            sample_db,
            "SELECT method FROM facility_document_links WHERE facility_id = %s AND document_id = %s",
            names[name],
            doc["id"],
        )
        assert row == "name_match", (doc["title"], name)
        # the document's matter reaches the facility too, made by name matching or stronger
        assert _links(sample_db, names[name]).get(doc["matter_ids"][0]) in ("name_match", "manual")


def test_short_name_in_a_body_links(sample_db: str, sample_dir: Path) -> None:
    data = _catalogue(sample_dir)
    doc = next(d for d in data["documents"] if d.get("body"))
    school = _facility(sample_db, "LH-SCHOOL-00001")
    with psycopg.connect(sample_db) as conn:
        row = conn.execute(
            "SELECT score, matched FROM facility_document_links "
            "WHERE facility_id = %s AND document_id = %s",
            (school, doc["id"]),
        ).fetchone()
    assert row is not None
    score, matched = row
    assert matched in doc["body"] and not matched.startswith("罗湖区")
    assert score == pytest.approx(0.6)


def test_manual_links_win_and_exclusions_remove(sample_db: str, sample_dir: Path) -> None:
    data = _catalogue(sample_dir)
    positive = [link for link in data["links"] if not link.get("exclude")]
    negative = [link for link in data["links"] if link.get("exclude")]
    assert positive and negative
    for link in positive:
        facility_id = _facility(sample_db, link["source_id"])
        assert _links(sample_db, facility_id).get(link["matter_id"]) == "manual"
    for link in negative:
        facility_id = _facility(sample_db, link["source_id"])
        assert link["matter_id"] not in _links(sample_db, facility_id)
    # the district centre is a service hall: no rule gives it a health matter, the manual link does
    hall_link = next(link for link in positive if "SERVICE_HALL" in link["source_id"])
    assert hall_link["matter_id"].startswith("M-HEA")


def test_relinking_is_idempotent_and_reports_changes(
    fresh_db: str, sample_dir: Path, tmp_path: Path
) -> None:
    load_sample(fresh_db, sample_dir)
    with connect(fresh_db) as conn:
        counts = effective_link_counts(conn)
        again = link_all(conn)
    assert counts["rule"] > 0 and counts["name_match"] > 0 and counts["manual"] > 0
    assert not again.changed
    assert again.name_matches.total > 0 and again.rules.total > 0
    assert (again.name_matches.added, again.name_matches.removed) == (0, 0)

    # a facility renamed so no document names it any more, and a new document naming another
    data = _catalogue(sample_dir)
    doc = next(d for d in data["documents"] if "2025年秋季招生工作指引" in d["title"])
    with psycopg.connect(fresh_db) as conn:
        named = conn.execute(
            "SELECT facility_id FROM facility_document_links WHERE document_id = %s", (doc["id"],)
        ).fetchone()
        assert named is not None
        conn.execute("UPDATE facilities SET name = '改名后的学校' WHERE id = %s", named)
        lost = conn.execute(
            "SELECT count(*) FROM facility_document_links WHERE facility_id = %s", named
        ).fetchone()
        other = conn.execute(
            "SELECT name FROM facilities WHERE layer = 'eldercare' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        assert lost is not None and other is not None
        conn.execute(
            "INSERT INTO documents (id, title, category, content_hash) "
            "VALUES ('NEW-1', %s, 'service', 'x')",
            (f"{other[0]}开放日安排",),
        )
    with connect(fresh_db) as conn:
        report = link_all(conn)
    assert report.name_matches.removed == lost[0]
    assert report.name_matches.added == 1
    assert report.changed

    runner = CliRunner()
    result = runner.invoke(app, ["link"], env={"DATABASE_URL": fresh_db})
    assert result.exit_code == 0, result.output
    assert "name_match" in result.output and "nothing changed" in result.output


def _stored_name_links(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT facility_id, document_id, score, matched FROM facility_document_links "
            "WHERE method = 'name_match' ORDER BY 1, 2"
        ).fetchall()


def test_names_sifted_chunk_by_chunk_link_exactly_as_one_automaton(
    fresh_db: str, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_sample(fresh_db, sample_dir)
    whole = _stored_name_links(fresh_db)
    with connect(fresh_db) as conn:
        one = link_all(conn)
        facilities = conn.execute("SELECT count(*) FROM facilities").fetchone()
    assert facilities is not None and facilities["count"] > 7 and whole
    # a shared name split over chunks is still shared (weaker score), too common still skipped
    monkeypatch.setattr(linking, "NAMES_CHUNK", 7)
    with connect(fresh_db) as conn:
        conn.execute("DELETE FROM facility_document_links WHERE method = 'name_match'")
        conn.commit()
        chunked = link_all(conn)
    assert _stored_name_links(fresh_db) == whole
    assert chunked.name_matches.added == len(whole) == one.name_matches.total
    assert (chunked.facilities, chunked.documents, chunked.patterns) == (
        one.facilities,
        one.documents,
        one.patterns,
    )


def test_without_documents_no_facility_name_is_read(
    fresh_db: str, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_sample(fresh_db, sample_dir)
    with connect(fresh_db) as conn:
        before = link_all(conn)
    assert before.documents > 0 and before.patterns > 0 and _stored_name_links(fresh_db)
    with psycopg.connect(fresh_db) as raw:
        raw.execute("DELETE FROM documents")  # the last document goes (its links with it)

    def no_names(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("facility names read with no document to search")

    monkeypatch.setattr(linking, "name_owners", no_names)
    with connect(fresh_db) as conn:
        report = link_all(conn)
        again = link_all(conn)
    assert _stored_name_links(fresh_db) == []
    assert (report.documents, report.patterns, report.name_matches.total) == (0, 0, 0)
    assert report.facilities == before.facilities
    assert report.rules == before.rules.__class__(0, 0, 0, before.rules.total)
    assert not again.changed
