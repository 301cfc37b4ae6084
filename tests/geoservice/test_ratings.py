"""Resident ratings through real HTTP: validation, toilets' sub-scores and tags, spam limits."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from geoservice.app import create_app
from geoservice.db.connection import connect
from tests.geoservice.toilet_support import add_facilities, toilet_settings


@pytest.fixture
def ratings_db(fresh_db: str) -> str:
    add_facilities(fresh_db)
    return fresh_db


@pytest.fixture
def client(ratings_db: str) -> Iterator[TestClient]:
    with TestClient(create_app(toilet_settings(ratings_db))) as test_client:
        yield test_client


def rate(client: TestClient, facility: str, body: dict[str, Any], agent: str = "phone-1") -> Any:
    # a fresh client per call has no cookie: the identity is IP + user agent
    client.cookies.clear()
    return client.post(
        f"/api/v1/facilities/{facility}/ratings", json=body, headers={"User-Agent": agent}
    )


def test_toilet_rating_with_subscores_tags_and_comment(client: TestClient, ratings_db: str) -> None:
    answer = rate(
        client,
        "toilet-a",
        {
            "score": 2,
            "cleanliness": 1,
            "smell": 2,
            "supplies": 3,
            "tags": ["no paper", "Wet-Floor"],
            "comment": "  <script>alert(1)</script> 没有纸  ",
        },
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["tags"] == ["no_paper", "wet_floor"]
    assert body["comment"] == "<script>alert(1)</script> 没有纸"
    assert body["rating"] == {"average": 2.0, "count": 1, "average_30d": 2.0, "count_30d": 1}
    assert "servicemap_client" in answer.headers["set-cookie"]
    assert "HttpOnly" in answer.headers["set-cookie"]
    with connect(ratings_db) as conn:
        row = conn.execute(
            "SELECT comment, client_hash, cookie_hash FROM facility_ratings"
        ).fetchone()
    assert row is not None and row["comment"] == body["comment"]
    # identities are salted hashes, never the address or the agent
    # <hash of the address>:<hash of address + agent>, neither readable
    assert [len(part) for part in row["client_hash"].split(":")] == [64, 64]
    assert "testclient" not in row["client_hash"]


def test_any_facility_can_be_rated_but_only_toilets_take_subscores(client: TestClient) -> None:
    assert rate(client, "clinic-a", {"score": 5, "comment": "kind doctors"}).status_code == 201
    refused = rate(client, "clinic-a", {"score": 4, "smell": 3, "tags": ["clean"]}, agent="b")
    assert refused.status_code == 422
    assert "smell" in refused.json()["detail"] and "tags" in refused.json()["detail"]


def test_unknown_facility_is_404(client: TestClient) -> None:
    assert rate(client, "no-such-place", {"score": 3}).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "score"),
        ({"score": 0}, "score"),
        ({"score": 6}, "score"),
        ({"score": "5"}, "score"),
        ({"score": 4.5}, "score"),
        ({"score": True}, "score"),
        ({"score": 3, "cleanliness": 9}, "cleanliness"),
        ({"score": 3, "tags": ["fabulous"]}, "no_paper"),
        ({"score": 3, "tags": "no_paper"}, "tags"),
        ({"score": 3, "comment": "x" * 501}, "comment"),
        ({"score": 3, "colour": "red"}, "colour"),
    ],
)
def test_bad_ratings_are_refused_naming_the_field(
    client: TestClient, ratings_db: str, body: dict[str, Any], field: str
) -> None:
    answer = rate(client, "toilet-a", body)
    assert answer.status_code == 422
    assert field in answer.json()["detail"]
    with connect(ratings_db) as conn:
        count = conn.execute("SELECT count(*) AS n FROM facility_ratings").fetchone()
    assert count is not None and count["n"] == 0


def test_comment_of_500_characters_with_control_characters(client: TestClient) -> None:
    comment = "好" * 500 + "\x00\x07"
    answer = rate(client, "toilet-b", {"score": 4, "comment": comment})
    assert answer.status_code == 201
    assert answer.json()["comment"] == "好" * 500


def test_rating_spam_from_one_client_is_limited(client: TestClient) -> None:
    assert rate(client, "toilet-a", {"score": 1}).status_code == 201
    again = rate(client, "toilet-a", {"score": 1})
    assert again.status_code == 429
    assert int(again.headers["retry-after"]) > 11 * 3600
    # another facility is fine; another device (user agent) is another client
    assert rate(client, "toilet-b", {"score": 1}).status_code == 201
    assert rate(client, "toilet-a", {"score": 5}, agent="phone-2").status_code == 201


def test_the_cookie_identifies_a_client_across_networks(client: TestClient) -> None:
    first = client.post(
        "/api/v1/facilities/toilet-c/ratings", json={"score": 3}, headers={"User-Agent": "a"}
    )
    assert first.status_code == 201
    cookie = client.cookies.get("servicemap_client")
    assert cookie
    # same cookie, another IP/agent: still the same client
    second = client.post(
        "/api/v1/facilities/toilet-c/ratings",
        json={"score": 3},
        headers={"User-Agent": "b", "X-Forwarded-For": "10.1.2.3"},
    )
    assert second.status_code == 429


def test_parallel_spam_stores_one_rating(client: TestClient, ratings_db: str) -> None:
    def once(_: int) -> int:
        answer = client.post(
            "/api/v1/facilities/toilet-d/ratings", json={"score": 1}, headers={"User-Agent": "bot"}
        )
        return answer.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(once, range(16)))
    assert sorted(codes) == [201] + [429] * 15
    with connect(ratings_db) as conn:
        count = conn.execute(
            "SELECT count(*) AS n FROM facility_ratings WHERE facility_id = 'toilet-d'"
        ).fetchone()
    assert count is not None and count["n"] == 1


def test_averages_appear_in_the_facility(client: TestClient) -> None:
    for i, score in enumerate([5, 4, 3]):
        assert rate(client, "toilet-a", {"score": score}, agent=f"p{i}").status_code == 201
    feature = client.get("/api/v1/facilities/toilet-a").json()
    rating = feature["properties"]["rating"]
    assert rating["average"] == 4.0 and rating["count"] == 3
    assert rating["average_30d"] == 4.0
