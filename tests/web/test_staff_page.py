"""The staff page in a real headless Chromium against a real server and PostGIS."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, expect

from geoservice.db.connection import connect
from geoservice.settings import Settings
from geoservice.toilets.admin import add_device, add_staff
from tests.geoservice.toilet_support import add_facilities, auth, reading, toilet_settings
from tests.web.conftest import open_offline_page

NASTY = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold</b>'


@pytest.fixture(scope="module")
def staff_site(make_db: Any, start_server: Callable[[Settings], str]) -> tuple[str, str]:
    """(base URL, staff token) of a server over a database with alerts and ratings."""
    url: str = make_db()
    add_facilities(url)
    with connect(url, autocommit=True) as conn:
        token = add_staff(conn, "Chen")
        _, device_token = add_device(conn, "toilet-a", 2)
    base = start_server(toilet_settings(url))
    now = datetime.now(UTC)
    with httpx.Client(base_url=base) as client:
        answer = client.post(
            "/api/v1/sensors/readings",
            content=orjson.dumps(reading(0, now - timedelta(seconds=30), nh3_ppm=40.0)),
            headers=auth(device_token),
        )
        assert answer.status_code == 200
        for agent, facility, body in [
            ("a", "toilet-b", {"score": 4, "comment": "clean-and-dry-42"}),
            ("b", "toilet-a", {"score": 1, "comment": NASTY, "tags": ["no_paper"]}),
            ("c", "clinic-a", {"score": 3}),
        ]:
            client.cookies.clear()
            answer = client.post(
                f"/api/v1/facilities/{facility}/ratings",
                json=body,
                headers={"User-Agent": agent},
            )
            assert answer.status_code == 201
    return base, token


def test_staff_page_signs_in_and_shows_alerts_then_ratings_escaped(
    browser: Browser, staff_site: tuple[str, str]
) -> None:
    base, token = staff_site
    offline = open_offline_page(browser, viewport={"width": 1280, "height": 900}, locale="en-GB")
    page = offline.page
    try:
        response = page.goto(f"{base}/staff?lang=en")
        assert response is not None and response.status == 200
        assert "script-src 'self'" in response.headers["content-security-policy"]
        expect(page.locator("#login-form")).to_be_visible()
        expect(page.locator("#board")).to_be_hidden()

        page.fill("#token", "sms_wrong")
        page.click("#login-form button[type=submit]")
        expect(page.locator("#login-error")).to_have_text("The token is invalid or revoked")
        expect(page.locator("#board")).to_be_hidden()

        page.fill("#token", token)
        page.click("#login-form button[type=submit]")
        expect(page.locator("#board")).to_be_visible()
        alerts = page.locator("#alerts li")
        expect(alerts).to_have_count(1)
        expect(alerts.first).to_contain_text("Ammonia high")
        expect(alerts.first).to_contain_text("40 ppm")
        # alerts come first, then the ratings table, then the map
        order = page.eval_on_selector_all("main > section", "sections => sections.map(s => s.id)")
        assert order == ["alerts-section", "ratings-section", "map-section"]
        rows = page.locator("#ratings tbody tr")
        expect(rows).to_have_count(3)
        scores = [rows.nth(i).locator("td").nth(3).inner_text() for i in range(3)]
        assert scores == ["1", "3", "4"]
        comment = rows.first.locator("td.comment")
        expect(comment).to_have_text(NASTY)
        assert comment.locator("b, img, script").count() == 0
        assert page.evaluate("window.__pwned") is None
        expect(rows.first).to_contain_text("No paper")
        # the token lives in this tab's sessionStorage only
        assert page.evaluate("sessionStorage.getItem('servicemap.staffToken')") == token
        assert page.evaluate("localStorage.length") == 0
        expect(page.locator("#map.leaflet-container")).to_be_visible()
        assert page.locator("#map .leaflet-interactive").count() == 4

        page.select_option("#sort", "recent")
        expect(rows.first.locator("td").nth(1)).to_have_text("东门社康中心")

        page.reload()
        expect(page.locator("#board")).to_be_visible()  # still signed in in this tab
        page.locator("#alerts li button.cleaned").click()
        expect(page.locator("#alerts li")).to_have_text("No open alerts")

        page.click("#sign-out")
        expect(page.locator("#login-form")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('servicemap.staffToken')") is None
        # the browser logs the refused wrong token (401); nothing else may go wrong
        errors = [e for e in offline.errors() if "status of 401" not in e]
        assert errors == [], errors
    finally:
        page.context.close()


def test_staff_data_needs_the_token(staff_site: tuple[str, str]) -> None:
    base, _ = staff_site
    with httpx.Client(base_url=base) as client:
        page = client.get("/staff")
        assert page.status_code == 200 and "login-form" in page.text
        assert "clean-and-dry-42" not in page.text  # no data in the page itself
        assert client.get("/api/v1/staff/ratings").status_code == 401
