"""Liveness, readiness and the layer catalogue through real HTTP on a real PostGIS."""

import psycopg
from fastapi.testclient import TestClient
from psycopg import sql

from geoservice.app import create_app
from tests.conftest import settings_for


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_ok(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_layers_catalogue(client: TestClient) -> None:
    response = client.get("/api/v1/layers?lang=en")
    assert response.status_code == 200
    body = response.json()
    keys = [layer["key"] for layer in body["layers"]]
    assert keys == ["school", "clinic", "eldercare", "service_hall", "toilet"]
    toilet = body["layers"][-1]
    assert toilet["names"]["zh-Hant"] == "公廁" and toilet["name"] == "Public toilets"
    assert "baby_change" in toilet["attributes"]["properties"]
    etag = response.headers["etag"]
    assert client.get("/api/v1/layers?lang=en", headers={"If-None-Match": etag}).status_code == 304


def test_layers_bad_lang(client: TestClient) -> None:
    response = client.get("/api/v1/layers?lang=fr")
    assert response.status_code == 422
    assert "lang" in response.json()["detail"]


def test_openapi_and_docs(client: TestClient) -> None:
    assert client.get("/openapi.json").json()["info"]["title"] == "servicemap"
    assert client.get("/docs").status_code == 200


def test_readyz_follows_the_database(fresh_db: str, server_url: str) -> None:
    """503 while the database refuses connections, 200 again once it is back; never dies."""
    name = fresh_db.rpartition("/")[2]
    with TestClient(create_app(settings_for(fresh_db))) as test_client:
        assert test_client.get("/readyz").status_code == 200
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
            )
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            try:
                assert test_client.get("/readyz").status_code == 503
                assert test_client.get("/healthz").status_code == 200
            finally:
                admin.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name))
                )
        assert test_client.get("/readyz").status_code == 200


def test_body_limit(fresh_db: str) -> None:
    settings = settings_for(fresh_db, max_body_bytes=2048)
    with TestClient(create_app(settings)) as test_client:
        response = test_client.post("/api/v1/layers", content=b"x" * 5000)
        assert response.status_code == 413
