"""OGC API - Features Part 3: CQL2 filters, queryables and conformance, over the sample district."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from geoservice.query.cql2 import CONFORMANCE

ITEMS = "/ogc/collections/{layer}/items"


def _all_ids(client: TestClient, layer: str, **params: Any) -> tuple[set[str], dict[str, Any]]:
    """Every id a filtered query matches (one page of up to 1000), and the last body."""
    response = client.get(ITEMS.format(layer=layer), params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert not [link for link in body["links"] if link["rel"] == "next"]
    return {f["id"] for f in body["features"]}, body


def _db_ids(url: str, layer: str, where: str, params: tuple[Any, ...] = ()) -> set[str]:
    query = f"SELECT id FROM facilities WHERE layer = %s AND status <> 'removed' AND ({where})"
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute(query, (layer, *params)).fetchall()}


def test_conformance_declares_filtering(client: TestClient) -> None:
    declared = client.get("/ogc/conformance").json()["conformsTo"]
    for name in ("filter", "features-filter", "queryables"):
        assert f"http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/{name}" in declared
    for name in ("cql2-text", "cql2-json", "basic-cql2", "basic-spatial-functions"):
        assert f"http://www.opengis.net/spec/cql2/1.0/conf/{name}" in declared
    assert set(CONFORMANCE) <= set(declared)


def test_queryables_are_a_json_schema(client: TestClient) -> None:
    collection = client.get("/ogc/collections/toilet").json()
    rels = {link["rel"]: link["href"] for link in collection["links"]}
    href = rels["http://www.opengis.net/def/rel/ogc/1.0/queryables"]
    assert href.endswith("/ogc/collections/toilet/queryables")
    response = client.get("/ogc/collections/toilet/queryables")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    schema = response.json()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and schema["$id"] == href
    properties = schema["properties"]
    assert properties["accessible"]["type"] == "boolean"
    assert properties["name"]["type"] == "string"
    assert properties["status"]["enum"] == ["active", "temporarily_closed"]
    assert properties["geometry"]["x-ogc-role"] == "primary-geometry"
    assert properties["stalls_female"]["type"] == "integer"  # a toilet attribute
    assert properties["baby_change"]["type"] == "boolean"
    assert "open_now" not in properties and "live" not in properties  # not filterable in SQL
    # a client that accepts only JSON (GDAL 3.6) gets the same document typed as JSON
    plain = client.get("/ogc/collections/toilet/queryables", headers={"Accept": "application/json"})
    assert plain.headers["content-type"].startswith("application/json")
    assert plain.json() == schema and plain.headers["etag"] != response.headers["etag"]
    assert response.headers["vary"] == plain.headers["vary"] == "Accept"
    school = client.get("/ogc/collections/school/queryables").json()["properties"]
    assert "level" in school and "stalls_female" not in school
    assert client.get("/ogc/collections/zoo/queryables").status_code == 404


@pytest.mark.parametrize(
    ("text", "where", "params"),
    [
        ("accessible = true", "accessible", ()),
        ("accessible = 1", "accessible", ()),  # how OGR SQL (GDAL) writes booleans
        ("NOT accessible = true", "NOT accessible", ()),
        ("accessible IS NULL", "accessible IS NULL", ()),
        ("name LIKE '%1%'", "name LIKE %s", ("%1%",)),
        ("CASEI(name) LIKE CASEI('%A%')", "lower(name) LIKE lower(%s)", ("%A%",)),
        ("status IN ('active', 'temporarily_closed')", "true", ()),
        (
            "stalls_female >= 4 AND (accessible = false OR accessible IS NULL)",
            "(attributes->>'stalls_female')::int >= 4 AND accessible IS NOT TRUE",
            (),
        ),
        (
            "stalls_female BETWEEN 2 AND 3",
            "(attributes->>'stalls_female')::int BETWEEN 2 AND 3",
            (),
        ),
        (
            "S_INTERSECTS(geometry, BBOX(114.11, 22.54, 114.14, 22.56))",
            "ST_Intersects(geom, ST_MakeEnvelope(114.11, 22.54, 114.14, 22.56, 4326))",
            (),
        ),
        (
            "S_INTERSECTS(geometry, POLYGON((114.11 22.54, 114.14 22.54, 114.14 22.56, "
            "114.11 22.56, 114.11 22.54)))",
            "ST_Intersects(geom, ST_MakeEnvelope(114.11, 22.54, 114.14, 22.56, 4326))",
            (),
        ),
    ],
)
def test_cql2_text_equals_sql(
    client: TestClient, sample_db: str, text: str, where: str, params: tuple[Any, ...]
) -> None:
    found, body = _all_ids(client, "toilet", filter=text)
    expected = _db_ids(sample_db, "toilet", where, params)
    assert found == expected
    assert body["numberMatched"] == len(expected)


def test_cql2_json_equals_cql2_text(client: TestClient) -> None:
    text = "accessible = true AND stalls_female > 5"
    document = {
        "op": "and",
        "args": [
            {"op": "=", "args": [{"property": "accessible"}, True]},
            {"op": ">", "args": [{"property": "stalls_female"}, 5]},
        ],
    }
    by_text, _ = _all_ids(client, "toilet", filter=text)
    by_json, _ = _all_ids(
        client, "toilet", filter=json.dumps(document), **{"filter-lang": "cql2-json"}
    )
    assert by_text == by_json and by_text
    spatial = {
        "op": "s_intersects",
        "args": [{"property": "geometry"}, {"bbox": [114.11, 22.54, 114.14, 22.56]}],
    }
    in_box, _ = _all_ids(
        client, "school", filter=json.dumps(spatial), **{"filter-lang": "cql2-json"}
    )
    by_bbox, _ = _all_ids(client, "school", bbox="114.11,22.54,114.14,22.56")
    assert in_box == by_bbox and in_box


def test_filter_with_bbox_and_paging_keeps_the_filter(client: TestClient, sample_db: str) -> None:
    params = {"filter": "accessible = true", "bbox": "114.09,22.52,114.23,22.62", "limit": 7}
    first = client.get(ITEMS.format(layer="toilet"), params=params).json()
    nxt = [link["href"] for link in first["links"] if link["rel"] == "next"][0]
    assert "filter=accessible" in nxt and "bbox=" in nxt
    ids: list[str] = []
    url: str | None = ITEMS.format(layer="toilet") + "?" + nxt.split("?", 1)[1]
    ids += [f["id"] for f in first["features"]]
    while url:
        body = client.get(url).json()
        ids += [f["id"] for f in body["features"]]
        links = [link["href"] for link in body["links"] if link["rel"] == "next"]
        url = (ITEMS.format(layer="toilet") + "?" + links[0].split("?", 1)[1]) if links else None
    assert len(ids) == len(set(ids))
    assert set(ids) == _db_ids(sample_db, "toilet", "accessible")


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"filter": "accessible = "}, "ends at character 12"),
        ({"filter": "accessible = = true"}, "character 14"),
        ({"filter": "colour = 'red'"}, "unknown property 'colour' at character 1"),
        ({"filter": "name = 'x' AND colour = 'red'"}, "'colour' at character 16"),
        ({"filter": "accessible = 'yes'"}, "property 'accessible' at character 1"),
        ({"filter": "name > 3"}, "property 'name'"),
        ({"filter": "stalls_female + 1 > 3"}, "not supported"),
        ({"filter": "name = 'x' OR S_WITHIN(geometry, POINT(1 1))"}, "supported at character 15"),
        ({"filter": "S_INTERSECTS(geometry, POINT(500 0))"}, "bad geometry"),
        ({"filter": "stalls_female = 1", "filter-lang": "sql"}, "filter-lang"),
        ({"filter": '{"op": "=", "args": [', "filter-lang": "cql2-json"}, "character 22"),
        (
            {
                "filter": '{"op": "and", "args": [{"op": "=", "args": [{"property": "name"}, "x"]},'
                ' {"op": "frobnicate", "args": []}]}',
                "filter-lang": "cql2-json",
            },
            "/args/1",
        ),
        ({"filter": "accessible = true", "filter-crs": "EPSG:3857"}, "filter-crs"),
    ],
)
def test_bad_filters_are_400_naming_where(
    client: TestClient, params: dict[str, str], named: str
) -> None:
    response = client.get(ITEMS.format(layer="toilet"), params=params)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert named in detail, detail


def test_values_are_bound_not_spliced(client: TestClient, sample_db: str) -> None:
    hostile = "name = 'x\\\"); DROP TABLE facilities; --' OR name LIKE '%;%'"
    found, body = _all_ids(client, "toilet", filter=hostile)
    assert found == set() and body["numberMatched"] == 0
    with psycopg.connect(sample_db) as conn:
        assert conn.execute("SELECT count(*) FROM facilities").fetchone()[0] > 0  # type: ignore[index]


def test_openapi_declares_the_filter(client: TestClient) -> None:
    document = client.get("/ogc/api").json()
    items = document["paths"]["/collections/{collectionId}/items"]["get"]
    names = {p["name"]: p for p in items["parameters"]}
    assert {"filter", "filter-lang", "filter-crs"} <= set(names)
    assert {"cql2-text", "cql2-json"} <= set(names["filter-lang"]["schema"]["enum"])
    assert "/collections/{collectionId}/queryables" in document["paths"]
