"""Static assets: served from the installed npm packages and web/static, safely, cacheably."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import web.map
from geoservice.app import create_app
from tests.conftest import settings_for


def test_vendor_files_are_served_with_cache_headers(client: TestClient):
    response = client.get("/static/vendor/leaflet/dist/leaflet.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert "max-age=86400" in response.headers["cache-control"]
    versioned = client.get("/static/vendor/leaflet/dist/leaflet.css?v=abc")
    assert versioned.status_code == 200
    assert "immutable" in versioned.headers["cache-control"]
    assert client.get("/static/vendor/leaflet/dist/images/layers.png").status_code == 200
    scoped = client.get("/static/vendor/@fortawesome/fontawesome-free/svgs/solid/restroom.svg")
    assert scoped.status_code == 200


def test_own_files_are_served(client: TestClient):
    for name in ("map.js", "map.css"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200
        assert response.headers["cache-control"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/vendor/leaflet/../../package.json",
        "/static/vendor/leaflet/%2e%2e/%2e%2e/package.json",
        "/static/vendor/leaflet/dist/..%2f..%2fpackage.json",
        "/static/vendor/leaflet/package.json",
        "/static/vendor/not-a-package/index.js",
        "/static/vendor/leaflet/dist/.hidden.js",
        "/static/..%2fmap.py",
        "/static/%2e%2e/map.py",
        "/static/../routes.py",
        "/static/vendor/leaflet/dist/leaflet.js%00.png",
        "/static/vendor/leaflet/dist//leaflet.js",
        "/static/" + "a/" * 200 + "x.js",
    ],
)
def test_no_way_out_of_the_asset_folders(client: TestClient, path: str):
    response = client.get(path)
    assert response.status_code == 404, response.text
    assert "detail" in response.json()


def test_the_page_says_how_to_install_missing_assets(
    sample_db: str, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    # another folder stands in for a checkout where `make assets` has not run
    monkeypatch.setattr(web.map, "NODE_MODULES", tmp_path / "node_modules")
    with TestClient(create_app(settings_for(sample_db))) as client:
        page = client.get("/?lang=en")
        assert page.status_code == 200
        assert "make assets" in page.text and 'role="alert"' in page.text
        asset = client.get("/static/vendor/leaflet/dist/leaflet.js")
        assert asset.status_code == 503
        assert "make assets" in asset.json()["detail"]


def test_map_page_headers_and_size(client: TestClient):
    response = client.get("/?lang=en")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    # no facility is written into the page: it stays small whatever the data
    assert len(response.content) < 40_000
    assert "sm-config" in response.text


def test_bad_language_is_a_clear_error(client: TestClient):
    response = client.get("/?lang=fr")
    assert response.status_code == 422
    assert "lang" in response.json()["detail"]
