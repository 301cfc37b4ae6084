"""The facility page: three languages, metadata for link previews, navigation, the five
disclosure groups, hostile names shown as text; checked over HTTP and in headless Chromium."""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import markupsafe
import prcoords
import psycopg
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser

from geoservice.db.connection import connect
from geoservice.disclosures.linking import link_all
from geoservice.settings import Settings
from ingest.disclosures import ingest_catalogue
from layers import CATEGORIES
from tests.conftest import settings_for
from tests.web.conftest import open_offline_page

STAGE_NAMES = {lang: [names[lang] for names in CATEGORIES.values()]
               for lang in ("zh-Hans", "zh-Hant", "en")}  # fmt: skip
HOSTILE_NAME = "<script>alert('name')</script>智慧公厕"
HOSTILE_TITLE = '<img src=x onerror="alert(1)">关于{name}开放时间调整的通知'


def _facility(url: str, layer: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT f.id, f.name FROM facilities f WHERE f.layer = %s "
            "AND EXISTS (SELECT 1 FROM facility_document_links l WHERE l.facility_id = f.id) "
            "ORDER BY f.id LIMIT 1",
            (layer,),
        ).fetchone()
    assert row is not None
    return {"id": row[0], "name": row[1]}


def _meta(page: str, prop: str) -> str:
    match = re.search(rf'<meta (?:property|name)="{re.escape(prop)}" content="([^"]*)"', page)
    assert match, prop
    return html.unescape(match.group(1))


@pytest.mark.parametrize(
    ("lang", "kind", "heading"),
    [
        ("zh-Hans", "公厕", "五公开"),
        ("zh-Hant", "公廁", "五公開"),
        ("en", "Public toilets", "Five disclosures"),
    ],
)
def test_page_in_each_language(
    client: TestClient, sample_db: str, lang: str, kind: str, heading: str
) -> None:
    toilet = _facility(sample_db, "toilet")
    response = client.get(f"/facilities/{toilet['id']}?lang={lang}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert f'<html lang="{lang}">' in page
    title = html.unescape(re.search(r"<title>(.*)</title>", page).group(1))  # type: ignore[union-attr]
    assert title.startswith(toilet["name"]) and kind in title
    assert _meta(page, "og:title") == toilet["name"]
    assert kind in _meta(page, "og:description") and kind in _meta(page, "description")
    assert _meta(page, "og:url").endswith(f"/facilities/{toilet['id']}?lang={lang}")
    assert _meta(page, "og:locale") == {"zh-Hans": "zh_CN", "zh-Hant": "zh_TW", "en": "en_US"}[lang]
    assert heading in page
    for stage in STAGE_NAMES[lang]:
        assert f"<h3>{stage}</h3>" in page
    assert 'id="live"' in page  # toilets show live status and rating


def test_language_from_accept_language(client: TestClient, sample_db: str) -> None:
    school = _facility(sample_db, "school")
    page = client.get(f"/facilities/{school['id']}", headers={"Accept-Language": "zh-TW,zh;q=0.8"})
    assert '<html lang="zh-Hant">' in page.text and "決策公開" in page.text
    page = client.get(f"/facilities/{school['id']}", headers={"Accept-Language": "en-GB"})
    assert '<html lang="en">' in page.text and 'id="live"' not in page.text
    assert client.get(f"/facilities/{school['id']}?lang=fr").status_code == 422


def test_page_lists_the_facility_disclosures(client: TestClient, sample_db: str) -> None:
    hall = _facility(sample_db, "service_hall")
    feature = client.get(f"/api/v1/facilities/{hall['id']}").json()
    page = client.get(f"/facilities/{hall['id']}?lang=en").text
    for category, documents in feature["properties"]["disclosures"].items():
        section = page.split(f'id="{category}"', 1)[1].split('class="doc-group"', 1)[0]
        hrefs = re.findall(r'<a href="([^"]+)" rel="noopener">', section)
        assert [html.unescape(h) for h in hrefs] == [d["url"] for d in documents]


def test_navigation_links_convert_to_gcj02(client: TestClient, sample_db: str) -> None:
    toilet = _facility(sample_db, "toilet")
    feature = client.get(f"/api/v1/facilities/{toilet['id']}").json()
    lon, lat = feature["geometry"]["coordinates"]
    page = client.get(f"/facilities/{toilet['id']}").text
    amap = html.unescape(re.search(r'id="nav-amap" href="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    query = parse_qs(urlsplit(amap).query)
    to_lon, to_lat, name = query["to"][0].split(",", 2)
    expected = prcoords.wgs_gcj((lat, lon))
    assert float(to_lon) == pytest.approx(expected.lon, abs=1e-6)
    assert float(to_lat) == pytest.approx(expected.lat, abs=1e-6)
    # GCJ-02 sits a few hundred metres off WGS 84 in Luohu: the conversion really happened
    shift_m = math.hypot((float(to_lon) - lon) * 102_000, (float(to_lat) - lat) * 111_000)
    assert 100 < shift_m < 1000
    assert name == toilet["name"] and query["coordinate"] == ["gaode"]
    osm = html.unescape(re.search(r'id="nav-osm" href="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    assert parse_qs(urlsplit(osm).query)["route"] == [f";{lat:.6f},{lon:.6f}"]


def test_unknown_facility_is_an_html_404(client: TestClient) -> None:
    response = client.get("/facilities/does-not-exist?lang=en")
    assert response.status_code == 404 and "No such facility" in response.text
    assert client.get("/facilities/" + "x" * 500).status_code == 422


@pytest.fixture(scope="module")
def hostile_db(
    make_db: Callable[[], str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A district with one facility and one document whose texts are markup."""
    from ingest.pipeline import ingest_file

    url = make_db()
    folder = tmp_path_factory.mktemp("hostile")
    source = folder / "toilets.geojson"
    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [114.1225, 22.5481]},
        "properties": {"source_id": "h1", "name": HOSTILE_NAME, "address": "<b>东门</b>中路1号",
                       "opening_hours": "24/7"},
    }  # fmt: skip
    source.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    title = HOSTILE_TITLE.format(name=HOSTILE_NAME)
    catalogue = {
        "matters": [{"id": "M1", "title": "公厕管理", "domain": "urban_management"}],
        "documents": [{"id": "D1", "title": title, "category": "service",
                       "url": "https://example.org/a?b=1&c=<x>", "published_at": "2025-05-01",
                       "matter_ids": ["M1"]}],
    }  # fmt: skip
    (folder / "catalogue.json").write_text(json.dumps(catalogue, ensure_ascii=False))
    with connect(url) as conn:
        ingest_file(conn, source, layer="toilet", source="hostile")
        ingest_catalogue(conn, folder / "catalogue.json")
        link_all(conn)
        # what no loader accepts but a database edited by hand might hold
        conn.execute("UPDATE facilities SET website = 'javascript:alert(3)'")
        conn.execute(
            "INSERT INTO documents (id, title, url, category, published_at, content_hash) "
            "VALUES ('D2', 'javascript link', 'javascript:alert(4)', 'result', '2025-01-01', 'x')"
        )
        conn.execute("INSERT INTO document_matters VALUES ('D2', 'M1')")
        row = conn.execute("SELECT id FROM facilities").fetchone()
    assert row is not None
    return {"url": url, "id": row["id"], "title": title}


def test_hostile_texts_are_escaped(hostile_db: dict[str, Any]) -> None:
    from geoservice.app import create_app

    with TestClient(create_app(settings_for(hostile_db["url"]))) as client:
        page = client.get(f"/facilities/{hostile_db['id']}?lang=en").text
    assert "<script>alert" not in page and "<img src=x" not in page and "<b>东门" not in page
    assert str(markupsafe.escape(HOSTILE_NAME)) in page
    assert "&lt;img src=x onerror=" in page
    assert "javascript link" in page and "javascript:alert(3)" in page
    assert 'href="javascript' not in page


def test_hostile_texts_in_chromium(
    browser: Browser, hostile_db: dict[str, Any], start_server: Callable[[Settings], str]
) -> None:
    base = start_server(settings_for(hostile_db["url"]))
    offline = open_offline_page(browser, viewport={"width": 390, "height": 844})
    page = offline.page
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto(f"{base}/facilities/{hostile_db['id']}?lang=zh-Hans")
        page.wait_for_selector("#map[data-ready='1']")
        assert page.locator("h1#name").inner_text() == HOSTILE_NAME
        assert page.title().startswith(HOSTILE_NAME)
        link = page.locator("#service li a[rel=noopener]")
        assert link.inner_text() == hostile_db["title"]
        assert link.get_attribute("href") == "https://example.org/a?b=1&c=<x>"
        assert page.locator("main img:not(.leaflet-tile)").count() == 1  # the QR code only
        assert page.locator("main script").count() == 0
        assert dialogs == [] and offline.errors() == []
    finally:
        page.context.close()


def test_page_in_chromium_phone_and_without_js(
    browser: Browser, live_server: str, sample_db: str
) -> None:
    toilet = _facility(sample_db, "toilet")
    offline = open_offline_page(
        browser, viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True
    )
    page = offline.page
    try:
        page.goto(f"{live_server}/facilities/{toilet['id']}?lang=zh-Hant")
        page.wait_for_selector("#map.leaflet-container[data-ready='1']")
        assert page.locator("h1#name").inner_text() == toilet["name"]
        assert page.locator(".doc-group h3").all_inner_texts() == STAGE_NAMES["zh-Hant"]
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert page.locator("#open-now").inner_text() in ("正在開放", "現在關閉", "開放狀態未知")
        assert offline.errors() == []
    finally:
        page.context.close()

    no_js = browser.new_context(java_script_enabled=False, viewport={"width": 390, "height": 844})
    try:
        page = no_js.new_page()
        page.goto(f"{live_server}/facilities/{toilet['id']}?lang=en")
        assert page.locator("h1#name").inner_text() == toilet["name"]
        assert page.locator("#map noscript").count() == 1
        assert page.locator(".doc-group h3").all_inner_texts() == STAGE_NAMES["en"]
        assert page.locator("#nav-osm").is_visible() and page.locator("#nav-amap").is_visible()
        assert page.locator("#details").inner_text().count("\n") >= 2
    finally:
        no_js.close()


def test_sample_catalogue_names_every_layer_on_some_page(sample_dir: Path) -> None:
    data = json.loads((sample_dir / "disclosures.json").read_text())
    assert len(data["documents"]) > 300 and len(data["matters"]) >= 9 * 4
