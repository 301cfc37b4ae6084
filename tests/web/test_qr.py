"""QR codes decode to exactly the facility page's public URL: PNG, SVG (rendered by Chromium)
and the printable per-layer sheets."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import zxingcpp
from fastapi.testclient import TestClient
from PIL import Image
from playwright.sync_api import Browser
from typer.testing import CliRunner

from geoservice.app import create_app
from geoservice.cli.main import app as cli
from geoservice.settings import Settings
from tests.conftest import settings_for

PUBLIC = "https://map.luohu.example.gov.cn"


def _ids(url: str, layer: str, n: int) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id FROM facilities WHERE layer = %s ORDER BY id LIMIT %s", (layer, n)
        ).fetchall()
    return [r[0] for r in rows]


def _decode(image: Image.Image) -> list[zxingcpp.Barcode]:
    return [r for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.QRCode]


@pytest.fixture(scope="module")
def public_client(sample_db: str) -> TestClient:
    with TestClient(create_app(settings_for(sample_db, public_url=PUBLIC + "/"))) as client:
        yield client  # type: ignore[misc]


@pytest.mark.parametrize("layer", ["toilet", "school", "service_hall"])
def test_png_decodes_to_the_facility_url(
    public_client: TestClient, sample_db: str, layer: str
) -> None:
    for facility_id in _ids(sample_db, layer, 2):
        response = public_client.get(f"/facilities/{facility_id}/qr.png")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.content)).convert("L")
        results = _decode(image)
        assert [r.text for r in results] == [f"{PUBLIC}/facilities/{facility_id}"]
        assert results[0].ec_level == "H"  # poster grade: 30 % of the code may be lost


def test_png_has_a_quiet_zone(public_client: TestClient, sample_db: str) -> None:
    facility_id = _ids(sample_db, "toilet", 1)[0]
    scale = 5
    image = Image.open(
        io.BytesIO(public_client.get(f"/facilities/{facility_id}/qr.png?scale={scale}").content)
    ).convert("L")
    width, height = image.size
    margin = 4 * scale
    pixels = image.load()
    assert pixels is not None
    border = [pixels[x, y] for x in range(width) for y in range(margin)]
    border += [pixels[x, y] for x in range(margin) for y in range(height)]
    assert min(border) == 255
    assert min(pixels[x, margin] for x in range(margin, width - margin)) == 0


def test_damaged_code_still_decodes(public_client: TestClient, sample_db: str) -> None:
    facility_id = _ids(sample_db, "toilet", 1)[0]
    image = Image.open(
        io.BytesIO(public_client.get(f"/facilities/{facility_id}/qr.png?scale=8").content)
    ).convert("L")
    width, height = image.size
    # a scratch across the lower right of the poster: about a tenth of the symbol lost
    for x in range(width // 2, int(width * 0.8)):
        for y in range(int(height * 0.6), int(height * 0.8)):
            image.putpixel((x, y), 255)
    assert [r.text for r in _decode(image)] == [f"{PUBLIC}/facilities/{facility_id}"]


def test_svg_rendered_by_chromium_decodes(
    browser: Browser, sample_db: str, start_server: Callable[[Settings], str]
) -> None:
    base = start_server(settings_for(sample_db, public_url=PUBLIC))
    facility_id = _ids(sample_db, "clinic", 1)[0]
    page = browser.new_page(viewport={"width": 400, "height": 400})
    try:
        response = page.goto(f"{base}/facilities/{facility_id}/qr.svg")
        assert response is not None and response.headers["content-type"] == "image/svg+xml"
        shot = Image.open(io.BytesIO(page.screenshot())).convert("L")
    finally:
        page.close()
    assert [r.text for r in _decode(shot)] == [f"{PUBLIC}/facilities/{facility_id}"]


def test_unknown_facility_has_no_code(public_client: TestClient) -> None:
    assert public_client.get("/facilities/nope/qr.png").status_code == 404
    assert public_client.get("/facilities/nope/qr.svg").status_code == 404
    assert public_client.get("/facilities/x/qr.png?scale=1000").status_code == 422


def test_qr_sheet_per_layer(
    browser: Browser, sample_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", sample_db)
    monkeypatch.setenv("SERVICEMAP_PUBLIC_URL", PUBLIC)
    out = tmp_path / "sheets"
    result = CliRunner().invoke(cli, ["qr", "--layer", "service_hall", "--layer", "school",
                                      "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    with psycopg.connect(sample_db) as conn:
        halls = dict(
            conn.execute(
                "SELECT id, name FROM facilities WHERE layer = 'service_hall' ORDER BY name, id"
            ).fetchall()
        )
        schools = conn.execute("SELECT count(*) FROM facilities WHERE layer = 'school'").fetchone()
    sheet = (out / "service_hall.svg").read_text()
    assert sheet.count("<path ") == len(halls)
    for name in halls.values():
        assert name in sheet
    school_sheet = (out / "school.svg").read_text()
    assert schools is not None and school_sheet.count("<path ") == schools[0]
    assert 'height="297.0mm"' in sheet  # one A4 page for eleven halls
    assert re.search(r'height="(\d+(\.\d+)?)mm"', school_sheet)

    # printed (rendered) at a poster's resolution, every code on the page decodes to its URL
    markup = sheet.split("?>", 1)[1]
    context = browser.new_context(viewport={"width": 794, "height": 1123}, device_scale_factor=2)
    try:
        page = context.new_page()
        page.set_content(f'<html><body style="margin:0">{markup}</body></html>')
        shot = Image.open(io.BytesIO(page.screenshot())).convert("L")
    finally:
        context.close()
    decoded = {r.text for r in _decode(shot)}
    assert decoded == {f"{PUBLIC}/facilities/{facility_id}" for facility_id in halls}


def test_qr_refuses_an_unknown_layer(sample_db: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["qr", "--layer", "bank", "--out", str(tmp_path)], env={"DATABASE_URL": sample_db}
    )
    assert result.exit_code != 0 and "bank" in result.output and "toilet" in result.output
