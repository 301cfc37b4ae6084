"""One-click follow buttons in a real headless Chromium: on a matter page, in a map popup and
for the area of a near-me search, signed out (the click leads to sign-in and back) and signed
in through the real mailed code; what was followed is on /me and in the API.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

import layers
from geoservice.db.connection import connect
from tests.geoservice.residents_support import Mailbox
from tests.web.conftest import OfflinePage, open_offline_page, settled
from web.i18n import TEXT

pytestmark = pytest.mark.browser

MATTER = "M-EDU-001"
EMAIL = "follower@example.org"


def sign_in_on_me(page: Page, mailbox: Mailbox) -> None:
    """Fill the /me sign-in form with the code the SMTP server received."""
    page.fill("#email", EMAIL)
    page.click("#send-code")
    expect(page.locator("#code-sent")).to_be_visible()
    page.check("#consent")
    page.fill("#code", mailbox.code_for(EMAIL))
    page.click("#verify")


def unexpected_errors(offline: OfflinePage) -> list[str]:
    """Console and script errors, but the one 401 of the follow click made signed out."""
    return [e for e in offline.errors() if "status of 401" not in e]


def test_follow_from_matter_page_map_popup_and_near_me(
    browser: Browser, resident_site: tuple[str, str, Mailbox]
) -> None:
    base, url, mailbox = resident_site
    with connect(url) as conn:
        matter = conn.execute("SELECT title FROM matters WHERE id = %s", (MATTER,)).fetchone()
    assert matter is not None
    school = httpx.get(f"{base}/ogc/collections/school/items?limit=1", timeout=30).json()
    facility: dict[str, Any] = school["features"][0]
    offline = open_offline_page(browser, viewport={"width": 1280, "height": 800})
    page = offline.page
    try:
        # signed out: the click on a matter page leads to sign-in, then back to the page
        page.goto(f"{base}/matters/{MATTER}?lang=en")
        expect(page.locator("#follow")).to_have_text("Follow")
        page.click("#follow")
        page.wait_for_url(f"{base}/me?next=*")
        expect(page.locator("#sign-in")).to_be_visible()
        sign_in_on_me(page, mailbox)
        page.wait_for_url(f"{base}/matters/{MATTER}?lang=en")
        page.click("#follow")
        expect(page.locator("#follow")).to_have_text("Following")
        expect(page.locator("#follow")).to_be_disabled()

        # the map: a facility's popup
        lon, lat = facility["geometry"]["coordinates"]
        page.goto(f"{base}/?lang=en&at={lat},{lon},18")
        settled(page)
        page.locator(f'.sm-marker[data-facility-id="{facility["id"]}"]').click()
        popup = page.locator(f'.sm-popup[data-facility-id="{facility["id"]}"]')
        button = popup.locator("button.sm-follow")
        expect(button).to_have_text("Follow")
        assert button.get_attribute("data-follow-kind") == "facility"
        button.click()
        expect(button).to_have_text("Following")

        # the map: the kind and place of a near-me search, as an area
        page.select_option("#sm-near-layer", "toilet")
        page.click("#sm-near-centre")
        area = page.locator("#sm-near-follow")
        expect(area).to_have_text(
            f"Follow {layers.get_layer('toilet').name('en')} within 500 m of here"
        )
        centre = (float(area.get_attribute("data-follow-lat") or "nan"),
                  float(area.get_attribute("data-follow-lon") or "nan"))  # fmt: skip
        area.click()
        expect(area).to_have_text("Following")

        # all three on /me and in the API, with this session's cookie
        page.goto(f"{base}/me?lang=en")
        subscriptions = page.locator("#subscriptions")
        expect(subscriptions.locator("li")).to_have_count(3)
        expect(subscriptions).to_contain_text(facility["properties"]["name"])
        expect(subscriptions).to_contain_text(matter["title"])
        expect(subscriptions).to_contain_text("within 500 m")
        listed = page.request.get(f"{base}/api/v1/me/subscriptions").json()
        rows = listed["subscriptions"] if isinstance(listed, dict) else listed
        by_kind = {row["kind"]: row for row in rows}
        assert set(by_kind) == {"matter", "facility", "area"}
        assert by_kind["matter"]["target"] == MATTER
        assert by_kind["facility"]["target"] == facility["id"]
        assert by_kind["area"]["layer"] == "toilet"
        assert by_kind["area"]["radius_m"] == 500
        assert (by_kind["area"]["lat"], by_kind["area"]["lon"]) == pytest.approx(centre, abs=1e-6)
        assert unexpected_errors(offline) == []
    finally:
        page.context.close()


@pytest.mark.parametrize("lang", list(TEXT["me"]))
def test_follow_buttons_speak_the_page_language(
    browser: Browser, resident_site: tuple[str, str, Mailbox], lang: str
) -> None:
    base, _, _ = resident_site
    words = TEXT["me"][lang]
    offline = open_offline_page(browser, viewport={"width": 390, "height": 844})
    page = offline.page
    try:
        page.goto(f"{base}/matters/{MATTER}?lang={lang}")
        expect(page.locator("#follow")).to_have_text(words["follow"])
        assert page.locator("#follow").get_attribute("data-following") == words["following"]
        school = httpx.get(f"{base}/ogc/collections/school/items?limit=1", timeout=30).json()
        facility = school["features"][0]
        lon, lat = facility["geometry"]["coordinates"]
        page.goto(f"{base}/?lang={lang}&at={lat},{lon},18")
        settled(page)
        page.locator(f'.sm-marker[data-facility-id="{facility["id"]}"]').click()
        button = page.locator(f'.sm-popup[data-facility-id="{facility["id"]}"] button.sm-follow')
        expect(button).to_have_text(words["follow"])
        assert button.get_attribute("data-following") == words["following"]
        assert offline.errors() == []
    finally:
        page.context.close()
