"""The hall, ticket, window, matter and document pages: real Chromium, real server, PostGIS."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from geoservice.settings import Settings
from tests.conftest import load_sample, settings_for
from tests.geoservice.halls_support import DISTRICT_HALL, MATTER, OPEN_HALL, load_halls_db
from tests.web.conftest import OfflinePage, open_offline_page

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


@pytest.fixture(scope="module")
def site(
    make_db: Callable[[], str],
    sample_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    start_server: Callable[[Settings], str],
) -> tuple[str, str]:
    """(base URL, staff token) of a server over the sample district with its halls."""
    url = make_db()
    load_sample(url, sample_dir)
    token = load_halls_db(url, sample_dir, tmp_path_factory.mktemp("halls-pages"))
    settings = settings_for(url)
    settings.halls = settings.halls.model_copy(update={"max_per_address_per_hour": 10_000})
    return start_server(settings), token


@pytest.fixture
def phone_page(browser: Browser) -> Iterator[OfflinePage]:
    """A phone-sized page (Chinese locale) that can reach only localhost."""
    offline = open_offline_page(browser, locale="zh-CN", **PHONE)
    yield offline
    offline.page.context.close()


def book_in_page(page: Page, base: str, name: str, phone: str) -> str:
    """Book the first free time of OPEN_HALL's MATTER today through the form; the code."""
    page.goto(f"{base}/halls/{OPEN_HALL}")
    page.select_option("#matter", MATTER)
    page.click("#book button[type=submit]")
    page.wait_for_url(re.compile(r"date="))
    page.fill("#name", name)
    page.fill("#phone", phone)
    page.click("#booking button[type=submit]")
    page.wait_for_url(re.compile(r"/appointments/[A-Z0-9]{10}"))
    match = re.search(r"/appointments/([A-Z0-9]{10})", page.url)
    assert match is not None
    return match.group(1)


def test_book_check_in_call_finish_and_rate_through_the_pages(
    browser: Browser, phone_page: OfflinePage, site: tuple[str, str]
) -> None:
    base, token = site
    page = phone_page.page
    page.goto(f"{base}/halls/{OPEN_HALL}")
    expect(page.locator("h1")).to_contain_text("街道行政服务大厅")
    expect(page.locator("#waiting")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#matters details").first).to_be_visible()
    code = book_in_page(page, base, "王小明", "13712345678")
    expect(page.locator("#status")).to_have_text("已预约")
    expect(page.locator("#code")).to_have_text(code)
    assert page.locator("img[src$='qr.svg']").evaluate("img => img.naturalWidth") > 0
    # the next slot starts within 15 minutes: check-in is open
    page.click("#check-in")
    expect(page.locator("#status")).to_have_text("已签到")
    number = page.locator("#number").inner_text()
    assert re.fullmatch(r"[A-Z]\d{3,}", number)

    # the staff window, from the keyboard only
    window = open_offline_page(browser, locale="en-GB", viewport={"width": 1280, "height": 800})
    try:
        staff = window.page
        staff.goto(f"{base}/staff/halls/{OPEN_HALL}/windows/1?lang=en")
        staff.fill("#token", token)
        staff.keyboard.press("Enter")
        expect(staff.locator("#desk")).to_be_visible()
        for _ in range(20):  # call until our number (earlier tests may have left others)
            staff.keyboard.press("n")
            expect(staff.locator("#current")).not_to_have_text("—")
            if staff.locator("#current").inner_text() == number:
                break
            staff.keyboard.press("s")
            expect(staff.locator("#current")).to_have_text("—")
        expect(staff.locator("#current")).to_have_text(number)
        staff.keyboard.press("r")
        expect(staff.locator("#message")).to_contain_text(number)
        staff.keyboard.press("1")
        expect(staff.locator("#current")).to_have_text("—")
        expect(staff.locator("#figures-section")).to_be_visible()
        assert window.errors() == []
    finally:
        window.page.context.close()

    page.reload()
    expect(page.locator("#status")).to_have_text("已办结")
    page.check("input[name=score][value='4']")
    page.fill("#comment", "<b>很快</b>")
    page.click("#evaluation button[type=submit]")
    expect(page.locator("#evaluation")).to_contain_text("满意")
    expect(page.locator("#evaluation")).to_contain_text("<b>很快</b>")  # shown as text
    expect(page.locator("#progress li")).to_have_count(5)
    assert phone_page.errors() == []


def test_window_page_shows_evaluation_figures_and_low_score_alerts(
    browser: Browser, site: tuple[str, str]
) -> None:
    base, token = site
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers) as client:
        ticket = client.post(f"/api/v1/halls/{OPEN_HALL}/tickets", json={"matter": MATTER}).json()
        while (called := client.post(f"/api/v1/staff/halls/{OPEN_HALL}/windows/2/next")).json()[
            "id"
        ] != ticket["id"]:
            client.post(f"/api/v1/staff/tickets/{called.json()['id']}/no-show")
        client.post(f"/api/v1/staff/tickets/{ticket['id']}/finish", json={"outcome": "referred"})
        rated = client.post(
            f"/api/v1/cases/{ticket['code']}/evaluation", json={"score": 1, "comment": "太慢了"}
        )
        assert rated.status_code == 201
    offline = open_offline_page(browser, locale="zh-CN", viewport={"width": 1280, "height": 800})
    try:
        page = offline.page
        page.goto(f"{base}/staff/halls/{OPEN_HALL}/windows/2")
        page.fill("#token", token)
        page.keyboard.press("Enter")
        expect(page.locator("#alerts")).to_contain_text("太慢了")
        expect(page.locator("#alerts")).to_contain_text("非常不满意")
        expect(page.locator("#figures tr").first).to_be_visible()
        page.select_option("#group-by", "matter")
        expect(page.locator("#figures")).to_contain_text(MATTER)
        assert offline.errors() == []
    finally:
        page.context.close()


def test_hall_page_updates_its_queue_by_itself(
    phone_page: OfflinePage, site: tuple[str, str]
) -> None:
    base, _ = site
    page = phone_page.page
    page.clock.install()
    page.goto(f"{base}/halls/{OPEN_HALL}?lang=en")
    before = int(page.locator("#waiting").inner_text())
    answer = httpx.post(f"{base}/api/v1/halls/{OPEN_HALL}/tickets", json={"matter": MATTER})
    assert answer.status_code == 201
    page.clock.run_for(16_000)
    expect(page.locator("#waiting")).to_have_text(str(before + 1))
    expect(page.locator("#live")).to_have_attribute("data-updated", re.compile(r"\d{4}-"))
    assert phone_page.errors() == []


def test_booking_and_walk_in_work_without_javascript(
    browser: Browser, site: tuple[str, str]
) -> None:
    base, _ = site
    offline = open_offline_page(browser, java_script_enabled=False, locale="zh-TW", **PHONE)
    try:
        page = offline.page
        code = book_in_page(page, base, "陳大文", "13698765432")
        expect(page.locator("#status")).to_have_text("已預約")
        page.click("#cancel")
        expect(page.locator("#status")).to_have_text("已取消")
        page.goto(f"{base}/halls/{OPEN_HALL}")
        page.click("#walk-in button[type=submit]")
        expect(page.locator("#number")).to_have_text(re.compile(r"^[A-Z]\d{3,}$"))
        expect(page.locator("#status")).to_have_text("已簽到")
        assert httpx.get(f"{base}/api/v1/appointments/{code}").json()["status"] == "cancelled"
    finally:
        offline.page.context.close()


def test_bad_booking_input_comes_back_with_the_reason(site: tuple[str, str]) -> None:
    base, _ = site
    with httpx.Client(base_url=base) as client:
        answer = client.post(
            f"/halls/{OPEN_HALL}/book?lang=en",
            data={
                "matter": MATTER,
                "start": "2026-01-01T00:00:00+08:00",
                "name": "x",
                "phone": "12345",
            },  # fmt: skip
            follow_redirects=True,
        )
        assert answer.status_code == 200 and "phone" in answer.text and 'id="error"' in answer.text
        for path in ("/halls/nope", "/matters/nope", "/documents/nope", "/appointments/nope",
                     "/halls/a%00b", "/matters/a%00b"):  # fmt: skip
            assert client.get(path).status_code == 404, path


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("zh-Hans", ["五公开", "在哪里办", "投诉与监督"]),
        ("zh-Hant", ["五公開", "在哪裡辦"]),
        ("en", ["Five disclosures", "Where to go", "Complaints"]),
    ],  # fmt: skip
)
def test_matter_page_in_three_languages(site: tuple[str, str], lang: str, words: list[str]) -> None:
    base, _ = site
    page = httpx.get(f"{base}/matters/M-HHR-001", params={"lang": lang})
    assert page.status_code == 200
    for word in words:
        assert word in page.text
    assert f"/halls/{DISTRICT_HALL}" in page.text  # where to handle it, with the booking link
    assert "/documents/D" in page.text


def test_document_page_links_matters_and_facilities(site: tuple[str, str]) -> None:
    base, _ = site
    hall = httpx.get(f"{base}/api/v1/halls/{DISTRICT_HALL}").json()
    guide = hall["matters"][0]["guides"][0]["id"]
    page = httpx.get(f"{base}/documents/{guide}", params={"lang": "en"})
    assert page.status_code == 200
    assert "/matters/" in page.text and f"/halls/{DISTRICT_HALL}" in page.text


@pytest.mark.parametrize("kind", ["matters/M-HHR-001", "documents/D000001"])
def test_qr_codes_encode_the_public_page_url(
    site: tuple[str, str], kind: str, tmp_path: Path
) -> None:
    base, _ = site
    png = httpx.get(f"{base}/{kind}/qr.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    path = tmp_path / "code.png"
    path.write_bytes(png.content)
    found: Any = zxingcpp.read_barcodes(Image.open(path))
    assert [r.text for r in found] == [f"http://127.0.0.1:8000/{kind}"]
    svg = httpx.get(f"{base}/{kind}/qr.svg")
    assert svg.status_code == 200 and svg.text.lstrip().startswith("<?xml")
    assert httpx.get(f"{base}/{kind}x/qr.svg").status_code == 404


def test_hall_qr_sheet_has_a_code_per_matter(site: tuple[str, str]) -> None:
    base, _ = site
    sheet = httpx.get(f"{base}/halls/{DISTRICT_HALL}/qr-sheet.svg")
    hall = httpx.get(f"{base}/api/v1/halls/{DISTRICT_HALL}").json()
    assert sheet.status_code == 200
    assert sheet.text.count("<desc>") == len(hall["matters"])


def test_facility_page_links_document_and_matter_pages(site: tuple[str, str]) -> None:
    base, _ = site
    page = httpx.get(f"{base}/facilities/{DISTRICT_HALL}", params={"lang": "en"})
    assert page.status_code == 200
    assert re.search(r'class="doc-page" href="/documents/D\d+\?lang=en"', page.text)
    assert re.search(r'class="matter-page" href="/matters/M-[A-Z]+-\d+\?lang=en"', page.text)
