"""OGC API - Features under /ogc, read by GDAL's OAPIF driver and OWSLib from a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pyogrio
import pytest
from fastapi.testclient import TestClient
from owslib.ogcapi.features import Features

from tests.servers import free_port, stop, wait_ready

LAYERS = ["school", "clinic", "eldercare", "service_hall", "toilet"]


@pytest.fixture(scope="module")
def server(sample_db: str) -> Iterator[str]:
    """A real uvicorn server (its own process: GDAL holds the GIL) over the sample database."""
    port = free_port()
    # links are built from the public URL (never the Host header): here, this server's address
    env = {
        **os.environ,
        "DATABASE_URL": sample_db,
        "SERVICEMAP_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "geoservice.asgi:create",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process)
    try:
        yield url
    finally:
        stop(process)


def _db_ids(url: str, layer: str, bbox: tuple[float, ...] | None = None) -> set[str]:
    query = "SELECT id FROM facilities WHERE layer = %s AND status <> 'removed'"
    params: list[Any] = [layer]
    if bbox:
        query += " AND ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, 4326))"
        params += list(bbox)
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute(query, params).fetchall()}


def test_gdal_reads_every_layer(server: str, sample_db: str) -> None:
    listed = pyogrio.list_layers(f"OAPIF:{server}/ogc")
    assert sorted(str(name) for name in listed[:, 0]) == sorted(LAYERS)
    for layer in LAYERS:
        frame = pyogrio.read_dataframe(f"OAPIF:{server}/ogc", layer=layer)
        assert len(frame) == len(_db_ids(sample_db, layer))
        assert frame.crs is not None and frame.crs.to_string() in ("OGC:CRS84", "EPSG:4326")
        assert {"name", "status", "layer"} <= set(frame.columns)
        assert frame.geometry.geom_type.eq("Point").all()


def test_ogrinfo_lists_layers(server: str) -> None:
    out = subprocess.run(
        ["ogrinfo", "-ro", "-so", f"OAPIF:{server}/ogc", "toilet"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "Layer name: toilet" in out and "Geometry: Point" in out


def test_owslib_walks_the_api(server: str, sample_db: str) -> None:
    api = Features(f"{server}/ogc")
    conformance = api.conformance()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson" in conformance
    collections = api.collections()["collections"]
    assert [c["id"] for c in collections] == LAYERS
    for collection in collections:
        west, south, east, north = collection["extent"]["spatial"]["bbox"][0]
        assert west <= east and south <= north
    assert api.collection("school")["id"] == "school"
    page = api.collection_items("clinic", limit=7)
    assert page["numberReturned"] == 7 and len(page["features"]) == 7
    first = page["features"][0]
    assert api.collection_item("clinic", first["id"])["id"] == first["id"]
    document = api.api()
    assert document["openapi"].startswith("3.0")


def test_paging_walks_every_feature_once(server: str, sample_db: str) -> None:
    ids: list[str] = []
    url: str | None = f"{server}/ogc/collections/toilet/items?limit=50"
    pages = 0
    with httpx.Client() as client:
        while url:
            response = client.get(url)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/geo+json")
            body = response.json()
            assert body["numberReturned"] == len(body["features"]) <= 50
            ids += [f["id"] for f in body["features"]]
            nxt = [link["href"] for link in body["links"] if link["rel"] == "next"]
            if pages:
                assert any(link["rel"] == "prev" for link in body["links"])
            url = nxt[0] if nxt else None
            pages += 1
    assert len(ids) == len(set(ids))
    assert set(ids) == _db_ids(sample_db, "toilet")
    assert body["numberMatched"] == len(ids)


def test_links_come_from_the_public_url_not_the_host_header(client: TestClient) -> None:
    public = "http://127.0.0.1:8000"  # SERVICEMAP_PUBLIC_URL's default (settings_for)
    headers = {"Host": "attacker.example"}
    for path in ("/ogc", "/ogc/collections", "/ogc/collections/toilet/items?limit=2"):
        response = client.get(path, headers=headers)
        assert "attacker.example" not in response.text
        assert all(link["href"].startswith(public) for link in response.json()["links"])
    document = client.get("/ogc/api", headers=headers).json()
    assert document["servers"] == [{"url": f"{public}/ogc"}]


def test_bbox_filter(client: TestClient, sample_db: str) -> None:
    bbox = (114.11, 22.54, 114.14, 22.56)
    response = client.get(
        "/ogc/collections/school/items", params={"bbox": ",".join(map(str, bbox)), "limit": 1000}
    )
    body = response.json()
    assert {f["id"] for f in body["features"]} == _db_ids(sample_db, "school", bbox)
    assert body["numberMatched"] == len(body["features"])
    six = client.get(
        "/ogc/collections/school/items",
        params={"bbox": "114.11,22.54,0,114.14,22.56,100", "limit": 1000},
    ).json()
    assert six["numberReturned"] == body["numberReturned"]


def test_limits_and_errors(client: TestClient) -> None:
    assert client.get("/ogc/collections/toilet/items").json()["numberReturned"] == 10
    big = client.get("/ogc/collections/toilet/items", params={"limit": 5000}).json()
    assert big["numberReturned"] <= 1000
    for params, named in [
        ({"limit": 0}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"bbox": "1,2"}, "bbox"),
        ({"bbox": "10,10,0,0"}, "bbox"),
    ]:
        response = client.get("/ogc/collections/toilet/items", params=params)
        assert response.status_code == 422 and named in response.json()["detail"]
    assert client.get("/ogc/collections/zoo").status_code == 404
    assert client.get("/ogc/collections/zoo/items").status_code == 404
    missing = client.get("/ogc/collections/toilet/items/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    beyond = client.get("/ogc/collections/toilet/items", params={"offset": 100000}).json()
    assert beyond["numberReturned"] == 0
    assert not [link for link in beyond["links"] if link["rel"] == "next"]


def test_caching_headers(client: TestClient) -> None:
    for path in ("/ogc", "/ogc/conformance", "/ogc/collections", "/ogc/collections/toilet"):
        response = client.get(path)
        assert response.status_code == 200 and "max-age" in response.headers["cache-control"]
        etag = response.headers["etag"]
        assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
    landing = client.get("/ogc").json()
    rels = {link["rel"] for link in landing["links"]}
    assert {"self", "service-desc", "conformance", "data"} <= rels


def test_crs84_by_reference(client: TestClient) -> None:
    crs84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
    declared = client.get("/ogc/conformance").json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs" in declared
    page = client.get("/ogc/collections/toilet/items", params={"crs": crs84, "limit": 1})
    assert page.status_code == 200 and page.headers["content-crs"] == f"<{crs84}>"
    one = client.get(f"/ogc/collections/toilet/items/{page.json()['features'][0]['id']}")
    assert one.headers["content-crs"] == f"<{crs84}>"
    for name in ("crs", "bbox-crs"):
        refused = client.get(
            "/ogc/collections/toilet/items",
            params={name: "http://www.opengis.net/def/crs/EPSG/0/3857"},
        )
        assert refused.status_code == 400 and name in refused.json()["detail"]
