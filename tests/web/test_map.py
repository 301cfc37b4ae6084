"""The map page in a real headless Chromium against a real server over the sample district."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

import layers
from geoservice.settings import PROJECT_ROOT, Settings
from tests.conftest import settings_for
from tests.web.conftest import OfflinePage, is_local, open_offline_page, settled

pytestmark = pytest.mark.browser

ARTIFACTS = PROJECT_ROOT / "artifacts"
#: a point in central Luohu (lat, lon)
POINT = (22.5482, 114.1203)
DRAWN = ".sm-marker, .sm-cluster, .sm-agg"


def api(base: str, path: str, **params: Any) -> Any:
    """GET a JSON document from the live server."""
    response = httpx.get(base + path, params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def facility_with_disclosures(base: str) -> dict[str, Any]:
    """A sample facility whose disclosures are not all empty, as /api/v1/facilities/{id}."""
    for layer in layers.all_layers():
        page = api(base, f"/ogc/collections/{layer}/items", limit=30)
        for feature in page["features"]:
            full = api(base, f"/api/v1/facilities/{feature['id']}")
            if any(full["properties"]["disclosures"].values()):
                return full  # type: ignore[no-any-return]
    raise AssertionError("the sample district has no facility with disclosures")


def test_page_loads_with_no_network_beyond_localhost(live_server: str, offline_page: OfflinePage):
    page = offline_page.page
    response = page.goto(live_server + "/?lang=en")
    assert response is not None and response.status == 200
    settled(page)
    page.wait_for_selector(DRAWN)
    assert offline_page.errors() == []
    # the only things the page wanted from elsewhere are base-map tiles (blank offline)
    assert all(url.endswith(".png") for url in offline_page.blocked), offline_page.blocked
    html = page.content()
    for tag in page.query_selector_all("script[src], link[href]"):
        target = tag.get_attribute("src") or tag.get_attribute("href") or ""
        assert target.startswith("/static/"), target
    assert "cdn" not in html.lower()
    legend = page.locator(".sm-layer-list").inner_text()
    for layer in layers.all_layers().values():
        assert layer.name("en") in legend
    counts = {
        el.get_attribute("data-count"): int(el.inner_text())
        for el in page.query_selector_all("[data-count]")
    }
    assert counts["toilet"] > 0 and set(counts) == set(layers.all_layers())


def test_each_layer_toggles(live_server: str, offline_page: OfflinePage):
    page = offline_page.page
    page.goto(live_server + "/?lang=en")
    settled(page)
    for key in layers.all_layers():
        selector = f".sm-layer-{key}"
        page.wait_for_selector(selector)
        page.uncheck(f'.sm-layer-toggle[data-layer="{key}"]')
        expect(page.locator(selector)).to_have_count(0)
        page.check(f'.sm-layer-toggle[data-layer="{key}"]')
        page.wait_for_selector(selector)
        settled(page)
    assert offline_page.errors() == []


def test_marker_popup_links_the_right_disclosures(live_server: str, offline_page: OfflinePage):
    facility = facility_with_disclosures(live_server)
    lon, lat = facility["geometry"]["coordinates"]
    page = offline_page.page
    page.goto(f"{live_server}/?lang=en&at={lat},{lon},18")
    settled(page)
    marker = page.locator(f'.sm-marker[data-facility-id="{facility["id"]}"]')
    marker.click()
    popup = page.locator(f'.sm-popup[data-facility-id="{facility["id"]}"]')
    popup.locator(".sm-stage").first.wait_for()
    assert popup.locator(".sm-popup-title").inner_text() == facility["properties"]["name"]
    settled(page)
    for category, documents in facility["properties"]["disclosures"].items():
        newest = sorted(documents, key=lambda d: d["published_at"] or "", reverse=True)[:3]
        links = popup.locator(f'a[data-category="{category}"][data-disclosure]')
        assert [links.nth(i).get_attribute("href") for i in range(links.count())] == [
            d["url"] for d in newest
        ]
        assert [links.nth(i).inner_text() for i in range(links.count())] == [
            d["title"] for d in newest
        ]
        more = popup.locator(f'.sm-stage[data-category="{category}"] a.sm-more')
        if len(documents) > 3:
            assert more.get_attribute("href") == f"/facilities/{facility['id']}#{category}"
        else:
            assert more.count() == 0
    details = popup.locator("a.sm-details")
    assert details.get_attribute("href") == f"/facilities/{facility['id']}"
    assert offline_page.errors() == []


def test_marker_is_keyboard_reachable(live_server: str, offline_page: OfflinePage):
    facility = facility_with_disclosures(live_server)
    lon, lat = facility["geometry"]["coordinates"]
    page = offline_page.page
    page.goto(f"{live_server}/?lang=en&at={lat},{lon},18")
    settled(page)
    marker = page.locator(f'.sm-marker[data-facility-id="{facility["id"]}"]')
    assert marker.get_attribute("tabindex") == "0"
    assert facility["properties"]["name"] in (marker.get_attribute("aria-label") or "")
    marker.focus()
    page.keyboard.press("Enter")
    page.locator(f'.sm-popup[data-facility-id="{facility["id"]}"]').wait_for()


@pytest.mark.parametrize("layer", [None, "toilet"])
def test_near_me_lists_what_the_api_ranks(browser: Browser, live_server: str, layer: str | None):
    lat, lon = POINT
    offline = open_offline_page(
        browser,
        geolocation={"latitude": lat, "longitude": lon},
        permissions=["geolocation"],
        viewport={"width": 1280, "height": 800},
    )
    page = offline.page
    try:
        page.goto(live_server + "/?lang=en")
        settled(page)
        if layer:
            page.select_option("#sm-near-layer", layer)
        page.click("#sm-near-locate")
        page.wait_for_selector("#sm-near-list li")
        settled(page)
        params: dict[str, Any] = {"lat": f"{lat:.6f}", "lon": f"{lon:.6f}", "k": 10}
        if layer:
            params["layer"] = layer
        expected = api(live_server, "/api/v1/nearest", **params)["features"]
        items = page.locator("#sm-near-list li")
        assert [items.nth(i).get_attribute("data-id") for i in range(items.count())] == [
            f["id"] for f in expected
        ]
        names = page.locator("#sm-near-list .sm-near-name").all_inner_texts()
        assert names == [f["properties"]["name"] for f in expected]
        distances = page.locator("#sm-near-list .sm-near-distance").all_inner_texts()
        assert all(d.endswith(" m") or d.endswith(" km") for d in distances)
        # choosing a result opens its popup
        page.locator("#sm-near-list button").first.click()
        page.locator(f'.sm-popup[data-facility-id="{expected[0]["id"]}"]').wait_for()
        assert offline.errors() == []
    finally:
        page.context.close()


def test_near_me_from_a_clicked_point(live_server: str, offline_page: OfflinePage):
    page = offline_page.page
    page.goto(live_server + "/?lang=en")
    settled(page)
    page.click("#sm-near-pick")
    assert page.locator("#sm-near-status").inner_text() == "Click a place on the map"
    box = page.locator(".sm-map").bounding_box()
    assert box is not None
    # a spot on the map away from markers is hard to guarantee; the container takes the click
    page.evaluate(
        "([x, y]) => { const map = document.querySelector('.sm-map');"
        " map.dispatchEvent(new MouseEvent('click', {clientX: x, clientY: y, bubbles: true})); }",
        [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
    )
    page.wait_for_selector("#sm-near-list li")
    assert page.locator("#sm-near-list li").count() == 10
    assert offline_page.errors() == []


def test_language_switch_changes_the_interface(live_server: str, offline_page: OfflinePage):
    page = offline_page.page
    expected = {"zh-Hans": "便民服务地图", "zh-Hant": "便民服務地圖", "en": "Service map"}
    for lang, title in expected.items():
        page.goto(f"{live_server}/?lang={lang}")
        settled(page)
        assert page.locator('.sm-title [data-i18n="title"]').inner_text() == title
        assert page.evaluate("document.documentElement.lang") == lang
        toilet = page.locator('.sm-layer-list [data-layer-name="toilet"]').inner_text()
        assert toilet == layers.get_layer("toilet").name(lang)
    # switching in place: no reload, the URL follows
    page.click('a[data-lang="zh-Hant"]')
    assert page.locator('.sm-title [data-i18n="title"]').inner_text() == expected["zh-Hant"]
    assert page.locator("#sm-near-locate").inner_text() == "使用我的位置"
    assert "lang=zh-Hant" in page.url
    assert page.locator('a[data-lang="zh-Hant"]').get_attribute("aria-current") == "true"
    assert offline_page.errors() == []


def test_hexagon_layer_toggles_on_demand(live_server: str, offline_page: OfflinePage):
    page = offline_page.page
    page.goto(live_server + "/?lang=en")
    settled(page)
    hexagons = ".leaflet-overlay-pane path.leaflet-interactive"
    assert page.locator(hexagons).count() == 0
    for metric in ("count", "avg_rating", "free_stalls"):
        page.select_option("#sm-hex-metric", metric)
        if not page.is_checked("#sm-hex-toggle"):
            page.check("#sm-hex-toggle")
        settled(page)
        if metric == "count":
            page.wait_for_selector(hexagons)
            assert page.locator("#sm-hex-legend").is_visible()
    page.uncheck("#sm-hex-toggle")
    expect(page.locator(hexagons)).to_have_count(0)
    assert offline_page.errors() == []


def test_phone_sized_screenshot(browser: Browser, live_server: str):
    offline = open_offline_page(
        browser,
        viewport={"width": 375, "height": 812},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    page = offline.page
    try:
        page.goto(live_server + "/?lang=zh-Hans")
        settled(page)
        page.wait_for_selector(DRAWN)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "map-375px.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        # nothing sticks out sideways; the controls are on screen and big enough to tap
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        for control in ("#sm-near-locate", '.sm-layer-toggle[data-layer="toilet"]', ".sm-map"):
            box = page.locator(control).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
        map_box = page.locator(".sm-map").bounding_box()
        assert map_box is not None and map_box["height"] >= 300
        assert offline.errors() == []
    finally:
        page.context.close()


XSS = "<img src=x onerror=alert(1)>"


def test_hostile_name_renders_as_text(
    browser: Browser, fresh_db: str, start_server: Callable[[Settings], str], tmp_path: Path
):
    from geoservice.db.connection import connect
    from ingest.pipeline import ingest_file

    lat, lon = POINT
    source = tmp_path / "hostile.geojson"
    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": {"source_id": "x1", "name": XSS, "address": XSS, "phone": "0755-1234"},
    }
    source.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with connect(fresh_db) as conn:
        ingest_file(conn, source, layer="toilet", source="hostile")
    base = start_server(settings_for(fresh_db))
    offline = open_offline_page(browser, viewport={"width": 1280, "height": 800})
    page = offline.page
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto(f"{base}/?lang=en&at={lat},{lon},18&near={lat},{lon}")
        settled(page)
        page.wait_for_selector("#sm-near-list li")
        assert page.locator("#sm-near-list .sm-near-name").first.inner_text() == XSS
        marker = page.locator(".sm-marker.sm-layer-toilet").first
        assert XSS in (marker.get_attribute("aria-label") or "")
        marker.click()
        popup = page.locator(".sm-popup")
        popup.wait_for()
        assert popup.locator(".sm-popup-title").inner_text() == XSS
        assert (
            page.locator(".sm-popup img, #sm-near-list img, .leaflet-marker-pane img").count() == 0
        )
        settled(page)
        assert dialogs == []
        assert offline.errors() == []
    finally:
        page.context.close()


def test_standalone_file_opens_offline(browser: Browser, sample_db: str, tmp_path: Path):
    out = tmp_path / "luohu.html"
    # the real command in its own process (Playwright owns this thread's event loop)
    command = [str(Path(sys.executable).parent / "servicemap"), "map", "--out", str(out)]
    command += ["--layer", "toilet", "--layer", "clinic", "--lang", "en"]
    result = subprocess.run(
        command, env={**os.environ, "DATABASE_URL": sample_db}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "map written" in result.stdout
    html = out.read_text(encoding="utf-8")
    assert "/static/" not in html and "<script src=" not in html
    offline = open_offline_page(browser, viewport={"width": 1280, "height": 800})
    page = offline.page
    # a file on disk: nothing at all may be fetched from the network
    page.context.unroute("**/*")
    blocked: list[str] = []
    page.context.route(
        "**/*",
        lambda route: (
            (blocked.append(route.request.url), route.abort())
            if not route.request.url.startswith(("file:", "data:"))
            else route.continue_()
        ),
    )
    try:
        page.goto(out.as_uri())
        page.wait_for_selector("body.sm-ready")
        page.wait_for_selector(".sm-layer-toilet")
        assert page.locator(".sm-layer-school").count() == 0
        assert sorted(
            el.get_attribute("data-layer") for el in page.query_selector_all(".sm-layer-toggle")
        ) == ["clinic", "toilet"]
        page.click("#sm-near-centre")
        page.wait_for_selector("#sm-near-list li")
        assert page.locator("#sm-near-list li").count() == 10
        page.locator("#sm-near-list button").first.click()
        page.locator(".sm-popup .sm-stage").first.wait_for()
        assert all(not is_local(url) for url in blocked)
        assert offline.errors() == []
    finally:
        page.context.close()


def _toilets(path: Path, names: list[str]) -> None:
    lat, lon = POINT
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [lon + i * 0.0006, lat]},
            "properties": {"source_id": f"t{i}", "name": name},
        }
        for i, name in enumerate(names)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))


def test_toilets_are_coloured_by_live_status(
    browser: Browser, fresh_db: str, start_server: Callable[[Settings], str], tmp_path: Path
):
    from datetime import UTC, datetime, timedelta

    from geoservice.db.connection import connect
    from geoservice.toilets.admin import add_device
    from ingest.pipeline import ingest_file

    names = ["free toilet", "full toilet", "offline toilet", "plain toilet"]
    _toilets(tmp_path / "toilets.geojson", names)
    with connect(fresh_db) as conn:
        ingest_file(conn, tmp_path / "toilets.geojson", layer="toilet", source="live")
        ids = {
            r["name"]: r["id"] for r in conn.execute("SELECT id, name FROM facilities").fetchall()
        }
        tokens = {name: add_device(conn, ids[name], stalls=2)[1] for name in names[:3]}
        conn.commit()
    base = start_server(settings_for(fresh_db))
    now = datetime.now(UTC)
    states = {
        "free toilet": (now, [False, True]),
        "full toilet": (now, [True, True]),
        "offline toilet": (now - timedelta(hours=2), [False, False]),
    }
    for name, (observed, occupied) in states.items():
        reading = {
            "seq": 1,
            "observed_at": observed.isoformat(),
            "stalls": [{"id": str(i + 1), "occupied": o} for i, o in enumerate(occupied)],
        }
        response = httpx.post(
            base + "/api/v1/sensors/readings",
            json=reading,
            headers={"Authorization": f"Bearer {tokens[name]}"},
        )
        assert response.status_code < 300, response.text
    # the offline sensor was last heard two hours ago (the server stamps last_seen itself)
    with connect(fresh_db) as conn:
        conn.execute(
            "UPDATE toilet_status SET last_seen = now() - interval '2 hours'"
            " WHERE facility_id = %s",
            (ids["offline toilet"],),
        )
        conn.commit()
    offline = open_offline_page(browser, viewport={"width": 1280, "height": 800})
    page = offline.page
    try:
        lat, lon = POINT
        page.goto(f"{base}/?lang=en&at={lat},{lon + 0.001},18")
        settled(page)
        expected = {
            "free toilet": "free",
            "full toilet": "full",
            "offline toilet": "offline",
            "plain toilet": "nosensor",
        }
        for name, state in expected.items():
            marker = page.locator(f'.sm-marker[data-facility-id="{ids[name]}"]')
            assert f"sm-live-{state}" in (marker.get_attribute("class") or "")
            marker.click()
            popup = page.locator(f'.sm-popup[data-facility-id="{ids[name]}"]')
            assert popup.locator(f".sm-live.sm-live-{state}").count() == 1
            page.keyboard.press("Escape")
        colours = {
            name: page.locator(f'.sm-marker[data-facility-id="{ids[name]}"] .sm-pin').evaluate(
                "el => getComputedStyle(el).backgroundColor"
            )
            for name in expected
        }
        assert len(set(colours.values())) == 4, colours
        settled(page)
        assert offline.errors() == []
    finally:
        page.context.close()


def ingest_scaled(url: str, tmp_path: Path, rows: int) -> None:
    """`rows` facilities of the scaled sample loaded into `url` by the real command."""
    from ingest.sample import write_scaled

    gpkg = write_scaled(tmp_path, rows)["gpkg"]
    command = [str(Path(sys.executable).parent / "servicemap"), "ingest", str(gpkg)]
    command += ["--layer-field", "layer", "--source", "scale"]
    done = subprocess.run(
        command, env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_many_facilities_arrive_as_aggregates_then_markers(
    browser: Browser, fresh_db: str, start_server: Callable[[Settings], str], tmp_path: Path
):
    ingest_scaled(fresh_db, tmp_path, 6000)
    base = start_server(settings_for(fresh_db))
    html = httpx.get(base + "/").text
    assert len(html) < 40_000
    offline = open_offline_page(browser, viewport={"width": 1280, "height": 800})
    page = offline.page
    try:
        page.goto(base + "/?lang=en")
        settled(page)
        # thousands of toilets in view: counts per hexagon, not thousands of markers
        aggregates = page.locator(".sm-agg.sm-layer-toilet")
        assert aggregates.count() > 0
        assert page.locator(".sm-marker.sm-layer-toilet").count() == 0
        shown = sum(int(t) for t in aggregates.all_inner_texts())
        assert shown > 1500
        # choosing an aggregate zooms in; at street level the facilities themselves arrive
        aggregates.first.click()
        settled(page)
        spot = api(base, "/ogc/collections/toilet/items", limit=1)["features"][0]
        lon, lat = spot["geometry"]["coordinates"]
        page.goto(f"{base}/?lang=en&at={lat},{lon},17")
        settled(page)
        page.locator(f'.sm-marker[data-facility-id="{spot["id"]}"]').wait_for()
        assert page.locator(".sm-agg").count() == 0
        assert offline.errors() == []
    finally:
        page.context.close()


def test_a_dense_layer_at_street_level_is_drawn_from_vector_tiles(
    browser: Browser, fresh_db: str, start_server: Callable[[Settings], str], tmp_path: Path
):
    from geoservice.db.connection import connect
    from web.map import TILE_BUDGET

    ingest_scaled(fresh_db, tmp_path, 6000)
    # a toilet with no other facility within 100 m: a click on it can hit only it
    with connect(fresh_db) as conn:
        spot = conn.execute(
            "SELECT f.id, f.name, ST_Y(f.geom) AS lat, ST_X(f.geom) AS lon FROM facilities f"
            " WHERE f.layer = 'toilet' AND NOT EXISTS (SELECT 1 FROM facilities o"
            "  WHERE o.id <> f.id AND ST_DWithin(o.geom::geography, f.geom::geography, 100))"
            " ORDER BY f.id LIMIT 1"
        ).fetchone()
        # a circle well inside the 1280 x 800 px view at zoom 15 (~5.6 x 3.5 km)
        in_view = conn.execute(
            "SELECT count(*) AS n FROM facilities WHERE layer = 'toilet'"
            " AND ST_DWithin(geom::geography, ST_MakePoint(%s, %s)::geography, 1500)",
            (spot["lon"], spot["lat"]),
        ).fetchone()
    assert spot is not None and in_view is not None
    base = start_server(settings_for(fresh_db))
    offline = open_offline_page(browser, viewport={"width": 1280, "height": 800})
    page = offline.page
    tiles: list[str] = []
    page.on(
        "response",
        lambda r: tiles.append(r.url) if "/tiles/WebMercatorQuad/15/" in r.url else None,
    )
    try:
        page.goto(f"{base}/?lang=en&at={spot['lat']},{spot['lon']},15")
        settled(page)
        # more toilets in view than the marker budget: no toilet markers, canvas tiles instead
        assert in_view["n"] > TILE_BUDGET
        assert page.locator(".sm-marker.sm-layer-toilet, .sm-cluster.sm-layer-toilet").count() == 0
        assert page.locator("canvas.leaflet-tile").count() > 0
        assert tiles and all("/ogc/collections/" in url for url in tiles)
        assert any("/collections/toilet/" in url for url in tiles)
        # the toilet at the centre: a click opens its popup, built from the facility itself
        box = page.locator(".sm-map").bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        popup = page.locator(f'.sm-popup[data-facility-id="{spot["id"]}"]')
        popup.locator(".sm-stage").first.wait_for()
        assert popup.locator(".sm-popup-title").inner_text() == spot["name"]
        assert popup.locator("a.sm-details").get_attribute("href") == f"/facilities/{spot['id']}"
        assert popup.locator("button.sm-follow").get_attribute("data-follow-id") == spot["id"]
        # closer in, markers again (each one reachable by keyboard)
        page.goto(f"{base}/?lang=en&at={spot['lat']},{spot['lon']},17")
        settled(page)
        page.locator(f'.sm-marker[data-facility-id="{spot["id"]}"]').wait_for()
        assert page.locator("canvas.leaflet-tile").count() == 0
        assert offline.errors() == []
    finally:
        page.context.close()
