"""GET /api/v1/facilities/{id} and get_facility on the sample district (real PostGIS, real HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from psycopg.rows import dict_row

from geoservice.query.facilities import get_facility
from layers import CATEGORIES
from tests.conftest import settings_for

PROPERTIES = {
    "layer", "name", "address", "phone", "website", "opening_hours", "open_now", "accessible",
    "status", "source", "source_id", "attributes", "updated_at",
}  # fmt: skip


def _first_id(url: str, layer: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT id FROM facilities WHERE layer = %s ORDER BY id LIMIT 1", (layer,)
        )
        found = row.fetchone()
    assert found is not None
    return str(found[0])


def test_facility_feature(client: TestClient, sample_db: str) -> None:
    facility_id = _first_id(sample_db, "toilet")
    response = client.get(f"/api/v1/facilities/{facility_id}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/geo+json")
    feature = response.json()
    assert feature["type"] == "Feature" and feature["id"] == facility_id
    assert feature["geometry"]["type"] == "Point"
    props = feature["properties"]
    assert PROPERTIES <= set(props)
    assert props["layer"] == "toilet"
    assert set(props["live"] or {}) <= {"stalls_total", "stalls_free", "online", "last_seen"}
    assert {"average", "count"} <= set(props["rating"])
    assert list(props["disclosures"]) == list(CATEGORIES)
    for documents in props["disclosures"].values():
        assert isinstance(documents, list)


def test_facility_school_has_no_live(client: TestClient, sample_db: str) -> None:
    facility_id = _first_id(sample_db, "school")
    props = client.get(f"/api/v1/facilities/{facility_id}").json()["properties"]
    assert props["layer"] == "school" and "live" not in props


def test_unknown_facility_is_404_naming_the_id(client: TestClient) -> None:
    response = client.get("/api/v1/facilities/no-such-facility")
    assert response.status_code == 404
    assert "no-such-facility" in response.json()["detail"]


def test_overlong_id_is_refused(client: TestClient) -> None:
    response = client.get("/api/v1/facilities/" + "x" * 500)
    assert response.status_code == 422
    assert "facility_id" in response.json()["detail"]


def test_removed_facility_still_answers(make_db: Callable[[], str], sample_dir: Any) -> None:
    from tests.conftest import load_sample

    url = make_db()
    load_sample(url, sample_dir)
    facility_id = _first_id(url, "clinic")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE facilities SET status = 'removed', status_reason = 'closed' WHERE id = %s",
            (facility_id,),
        )
    settings = settings_for(url)

    async def fetch() -> dict[str, Any] | None:
        async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
            return await get_facility(conn, facility_id, settings)

    feature = asyncio.run(fetch())
    assert feature is not None and feature["properties"]["status"] == "removed"
    assert asyncio.run(_missing(url, settings)) is None


async def _missing(url: str, settings: Any) -> dict[str, Any] | None:
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        return await get_facility(conn, "nope", settings)


def test_id_with_nul_byte_is_404(client: TestClient) -> None:
    for path in ("/api/v1/facilities/a%00b", "/ogc/collections/toilet/items/a%00b"):
        response = client.get(path)
        assert response.status_code == 404
