"""The disclosure API through real HTTP: the catalogue, and links in both directions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoservice.disclosures.routes import PER_GROUP, facility_disclosure_groups
from layers import CATEGORIES, DOMAINS


def _catalogue(sample_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((sample_dir / "disclosures.json").read_text())
    return data


def _named_document(sample_dir: Path) -> dict[str, Any]:
    """A sample document whose Traditional-script title names a facility."""
    data = _catalogue(sample_dir)
    return next(d for d in data["documents"] if d["title"].startswith("羅湖區"))


def test_list_is_newest_first_and_paged(client: TestClient, sample_dir: Path) -> None:
    total = len(_catalogue(sample_dir)["documents"])
    first = client.get("/api/v1/disclosures?limit=7").json()
    assert first["numberMatched"] == total and first["numberReturned"] == 7
    dates = [d["published_at"] for d in first["documents"]]
    assert dates == sorted(dates, reverse=True)
    following = next(link["href"] for link in first["links"] if link["rel"] == "next")
    second = client.get(following).json()
    assert second["offset"] == 7
    assert not {d["id"] for d in first["documents"]} & {d["id"] for d in second["documents"]}
    assert second["documents"][0]["published_at"] <= dates[-1]
    last = client.get(f"/api/v1/disclosures?limit=7&offset={total - 3}").json()
    assert last["numberReturned"] == 3 and all(link["rel"] != "next" for link in last["links"])


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_filter_by_category(client: TestClient, sample_dir: Path, category: str) -> None:
    expected = [d for d in _catalogue(sample_dir)["documents"] if d["category"] == category]
    body = client.get(f"/api/v1/disclosures?category={category}&limit=100").json()
    assert body["numberMatched"] == len(expected) > 0
    assert {d["category"] for d in body["documents"]} == {category}


def test_filter_by_domain_matter_and_text(client: TestClient, sample_dir: Path) -> None:
    data = _catalogue(sample_dir)
    domain_of = {m["id"]: m["domain"] for m in data["matters"]}
    for domain in DOMAINS:
        expected = {d["id"] for d in data["documents"]
                    if any(domain_of[m] == domain for m in d["matter_ids"])}  # fmt: skip
        body = client.get(f"/api/v1/disclosures?domain={domain}&limit=100").json()
        assert body["numberMatched"] == len(expected) > 0
        assert all(any(m["domain"] == domain for m in d["matters"]) for d in body["documents"])
    matter = data["matters"][0]["id"]
    body = client.get(f"/api/v1/disclosures?matter={matter}&category=service").json()
    assert body["numberMatched"] == sum(
        1 for d in data["documents"] if matter in d["matter_ids"] and d["category"] == "service"
    )
    body = client.get("/api/v1/disclosures", params={"q": "羅湖區", "limit": 100}).json()
    assert body["numberMatched"] == sum(1 for d in data["documents"] if "羅湖區" in d["title"])
    # LIKE wildcards in the text are taken literally
    assert client.get("/api/v1/disclosures", params={"q": "%_"}).json()["numberMatched"] == 0


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("category=rumour", "category"),
        ("domain=transport", "domain"),
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("offset=-1", "offset"),
        ("q=" + "x" * 101, "q"),
        ("matter=" + "m" * 300, "matter"),
    ],
)
def test_bad_parameters_are_named(client: TestClient, query: str, parameter: str) -> None:
    response = client.get(f"/api/v1/disclosures?{query}")
    assert response.status_code == 422
    assert parameter in response.json()["detail"]


def test_unknown_ids_are_404(client: TestClient) -> None:
    assert client.get("/api/v1/disclosures/NOPE").status_code == 404
    assert client.get("/api/v1/disclosures?facility=nope").status_code == 404
    assert client.get("/api/v1/disclosures/D000001?layer=bank").status_code == 422


def test_document_to_facilities_and_back(client: TestClient, sample_dir: Path) -> None:
    doc = _named_document(sample_dir)
    body = client.get(f"/api/v1/disclosures/{doc['id']}").json()
    assert body["title"] == doc["title"] and body["category"] == doc["category"]
    assert [m["id"] for m in body["matters"]] == doc["matter_ids"]
    facilities = body["facilities"]
    assert facilities["type"] == "FeatureCollection" and facilities["numberMatched"] > 1
    named = facilities["features"][0]
    # the facility the title names comes first, linked by name although the scripts differ
    assert named["properties"]["link"]["method"] == "name_match"
    assert named["properties"]["link"]["matched"] == named["properties"]["name"]
    assert named["properties"]["name"] not in doc["title"]
    assert named["geometry"]["type"] == "Point"
    methods = {f["properties"]["link"]["method"] for f in facilities["features"]}
    assert methods <= {"manual", "rule", "name_match"}

    # back: the facility lists the document in its stage
    facility = client.get(f"/api/v1/facilities/{named['id']}").json()
    disclosures = facility["properties"]["disclosures"]
    assert list(disclosures) == list(CATEGORIES)
    group = disclosures[doc["category"]]
    item = next(i for i in group if i["id"] == doc["id"])
    assert item["title"] == doc["title"] and item["url"] == doc["url"]
    assert item["published_at"] == doc["published_at"]
    assert item["matter"]["id"] == doc["matter_ids"][0]
    for documents in disclosures.values():
        dates = [d["published_at"] for d in documents]
        assert dates == sorted(dates, reverse=True) and len(documents) <= PER_GROUP


def test_every_listed_document_lists_the_facility(client: TestClient, sample_db: str) -> None:
    with psycopg.connect(sample_db) as conn:
        row = conn.execute(
            "SELECT id FROM facilities WHERE layer = 'service_hall' ORDER BY id LIMIT 1"
        ).fetchone()
    assert row is not None
    facility_id = row[0]
    disclosures = client.get(f"/api/v1/facilities/{facility_id}").json()["properties"][
        "disclosures"
    ]
    listed = [d for group in disclosures.values() for d in group]
    assert len(listed) > 10
    for doc in listed[:15]:
        found = client.get(f"/api/v1/disclosures/{doc['id']}?layer=service_hall&limit=1000").json()
        assert facility_id in {f["id"] for f in found["facilities"]["features"]}


def test_groups_are_bounded_and_say_how_many_more(client: TestClient, sample_db: str) -> None:
    import asyncio

    with psycopg.connect(sample_db) as conn:
        row = conn.execute(
            "SELECT id FROM facilities WHERE layer = 'service_hall' ORDER BY id LIMIT 1"
        ).fetchone()
    assert row is not None

    async def groups() -> tuple[dict[str, Any], dict[str, int]]:
        async with await psycopg.AsyncConnection.connect(
            sample_db, row_factory=psycopg.rows.dict_row
        ) as conn:
            return await facility_disclosure_groups(conn, row[0], limit=2)

    shown, totals = asyncio.run(groups())
    assert all(len(items) <= 2 for items in shown.values())
    assert any(totals[c] > 2 for c in CATEGORIES)
    for category in CATEGORIES:
        paged = client.get(
            "/api/v1/disclosures", params={"facility": row[0], "category": category}
        ).json()
        assert paged["numberMatched"] == totals[category]
        assert [d["id"] for d in paged["documents"][:2]] == [d["id"] for d in shown[category]]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(min_size=1, max_size=120))
def test_any_text_is_a_clean_answer_never_a_500(client: TestClient, text: str) -> None:
    path = quote(text, safe="")
    for url, params in (
        (f"/api/v1/disclosures/{path}", None),
        ("/api/v1/disclosures", {"q": text}),
        ("/api/v1/disclosures", {"matter": text}),
        ("/api/v1/disclosures", {"facility": text}),
        (f"/facilities/{path}/qr.png", None),
        (f"/facilities/{path}", None),
    ):
        response = client.get(url, params=params)
        assert response.status_code in (200, 404, 422), (url, params, response.status_code)
