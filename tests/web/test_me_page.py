"""The resident's page /me in a real headless Chromium: sign in with a mailed code (a real SMTP
server), follow from a facility page with one click, follow an area, see the feed with reasons,
switch language, sign out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, expect

from geoservice.db.connection import connect
from ingest.disclosures import ingest_catalogue
from tests.geoservice.residents_support import Mailbox
from tests.web.conftest import open_offline_page

MATTER = "M-EDU-001"


def test_me_sign_in_follow_feed_languages_sign_out(
    browser: Browser, resident_site: tuple[str, str, Mailbox], sample_dir: Path, tmp_path: Path
) -> None:
    base, url, mailbox = resident_site
    offline = open_offline_page(browser, viewport={"width": 390, "height": 844})
    page = offline.page
    page.goto(f"{base}/me?lang=en")
    expect(page.locator("h1")).to_contain_text("My page")
    expect(page.locator("#consent-text")).to_contain_text("PIPL")
    page.fill("#email", "browser@example.org")
    page.click("#send-code")
    expect(page.locator("#code-sent")).to_be_visible()
    code = mailbox.code_for("browser@example.org")
    page.check("#consent")
    page.fill("#code", code)
    page.click("#verify")
    expect(page.locator("#subscriptions")).to_be_visible()
    expect(page.locator("main")).to_contain_text("browser@example.org")

    # one click on a facility page follows it
    with connect(url) as conn:
        school = conn.execute(
            "SELECT id, name FROM facilities WHERE layer = 'school' ORDER BY id LIMIT 1"
        ).fetchone()
    assert school is not None
    page.goto(f"{base}/facilities/{school['id']}?lang=en")
    page.click("#follow")
    expect(page.locator("#follow")).to_have_text("Following")

    # an area from the form, a matter through the API with the page's own session
    page.goto(f"{base}/me?lang=en")
    page.select_option("#area-layer", "toilet")
    page.fill("#area-radius", "800")
    page.click("#area-add")
    expect(page.locator("#subscriptions li")).to_have_count(2)
    expect(page.locator("#subscriptions")).to_contain_text(school["name"])
    expect(page.locator("#subscriptions")).to_contain_text("within 800 m")
    answer = page.request.post(f"{base}/api/v1/me/subscriptions",
                               data={"kind": "matter", "id": MATTER})  # fmt: skip
    assert answer.status == 201

    # a new document of the matter shows in the feed with its reason
    catalogue: dict[str, Any] = json.loads((sample_dir / "disclosures.json").read_text("utf-8"))
    catalogue["documents"].append({"id": "D-ME-1", "title": "浏览器测试文件", "body": None,
        "url": None, "category": "service", "published_at": "2026-12-01", "issuer": None,
        "doc_number": None, "matter_ids": [MATTER]})  # fmt: skip
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(catalogue, ensure_ascii=False), "utf-8")
    with connect(url) as conn:
        ingest_catalogue(conn, path)
    page.goto(f"{base}/me?lang=en")
    item = page.locator("#feed li", has_text="浏览器测试文件").first
    expect(item).to_contain_text("you follow")
    expect(item.locator("a")).to_have_attribute("href", "http://127.0.0.1:8000/documents/D-ME-1")

    # unfollow, languages, export, sign out
    page.locator("#subscriptions button.unfollow").first.click()
    expect(page.locator("#subscriptions li")).to_have_count(2)
    page.goto(f"{base}/me?lang=zh-Hant")
    expect(page.locator("h1")).to_contain_text("我的主頁")
    exported = page.request.get(f"{base}/api/v1/me/export").json()
    assert exported["account"]["email"] == "browser@example.org"
    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible()
    assert page.request.get(f"{base}/api/v1/me").status == 401
    assert offline.errors() == []
    page.context.close()
