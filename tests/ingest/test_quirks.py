"""Vendor and format quirks (issue 17, section 2), on files shaped like the real ones.

Every file here is written by the test itself (see tests/fixtures/SOURCES.md, "written by the
tests"): Amap v3/v5 and Baidu Place API responses modelled on the vendors' documented answers
(Amap's ``[]`` for "no value" as measured on real Amap exports: 10 of 50 addresses, 49 of 50
phones), an Excel workbook as a district bureau sends it (an explanation sheet, a merged title
row above the header), a GBK Shapefile without `.cpg` (code-page byte 0) as Chinese GIS exports
write it.
"""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path

import geopandas as gpd
import openpyxl
import prcoords
import pyogrio
import pytest
import xlwt
from rich.cells import cell_len
from rich.console import Console
from shapely import points

from geoservice.cli import console
from ingest.readers import detect_format, open_source
from tests.ingest.conftest import Ingest
from tests.ingest.util import rows, run_cli

NAMES = ["东门公厕", "翠竹智慧公厕（翠竹路）", "罗湖口岸公厕"]
LON = [114.1221, 114.1283, 114.1755]
LAT = [22.5501, 22.5632, 22.5571]


def _stored(url: str, source: str) -> list[dict[str, object]]:
    return rows(
        url,
        "SELECT source_id, name, address, phone, opening_hours_raw, ST_X(geom) AS lon, "
        "ST_Y(geom) AS lat FROM facilities WHERE source = %s ORDER BY source_id",
        (source,),
    )


# --- map vendors ----------------------------------------------------------------------------


def _amap(tmp_path: Path) -> Path:
    v3 = {
        "status": "1",
        "info": "OK",
        "count": "2",
        "pois": [
            {"id": "B0FFG1", "name": NAMES[0], "type": "生活服务;公共厕所;公共厕所",
             "typecode": "200300", "address": [], "tel": [], "location": f"{LON[0]},{LAT[0]}",
             "cityname": "深圳市", "adname": "罗湖区", "adcode": "440303"},
            {"id": "B0FFG2", "name": NAMES[1], "address": "翠竹路1号", "tel": "[]",
             "location": f"{LON[1]},{LAT[1]}", "adcode": "440303"},
        ],
    }  # fmt: skip
    v5 = {
        "status": "1",
        "info": "OK",
        "pois": [
            {"id": "B0FFG3", "name": NAMES[2], "address": "", "location": f"{LON[2]},{LAT[2]}",
             "business": {"tel": "0755-82345678", "opentime_today": "06:00-23:00",
                          "opentime_week": "周一至周日 06:00-23:00"}},
            # "no value" under business: the top-level phone and today's hours are used instead
            {"id": "B0FFG4", "name": "东湖公园公厕", "address": [], "tel": "0755-22223333",
             "location": "114.1500,22.5700",
             "business": {"tel": "[]", "opentime_week": [], "opentime_today": "全天开放"}},
        ],
    }  # fmt: skip
    path = tmp_path / "amap.json"
    path.write_text(
        json.dumps(v3, ensure_ascii=False, indent=1) + "\n" + json.dumps(v5, ensure_ascii=False),
        encoding="utf-8",
    )
    return path


def test_amap_empty_lists_are_missing_and_v5_business(
    fresh_db: str, ingest: Ingest, tmp_path: Path
) -> None:
    report = ingest(fresh_db, _amap(tmp_path), layer="toilet", source="amap")
    assert report.outcome == "ok" and report.inserted == 4 and report.crs == "gcj02"
    stored = _stored(fresh_db, "amap")
    assert [r["address"] for r in stored] == [None, "翠竹路1号", None, None]
    assert [r["phone"] for r in stored] == [None, None, "0755-82345678", "0755-22223333"]
    assert stored[2]["opening_hours_raw"] == "周一至周日 06:00-23:00"
    assert stored[3]["opening_hours_raw"] == "全天开放"
    assert [r["name"] for r in stored] == [*NAMES, "东湖公园公厕"]
    for r, lon, lat in zip(stored, [*LON, 114.15], [*LAT, 22.57], strict=True):
        wgs = prcoords.gcj_wgs_bored((lat, lon))
        assert r["lat"] == pytest.approx(wgs[0], abs=1e-6)
        assert r["lon"] == pytest.approx(wgs[1], abs=1e-6)


def test_baidu_place_response_is_bd09(fresh_db: str, ingest: Ingest, tmp_path: Path) -> None:
    bd = [prcoords.wgs_bd((lat, lon)) for lon, lat in zip(LON, LAT, strict=True)]
    answer = {
        "status": 0,
        "message": "ok",
        "total": 3,
        "results": [
            {"name": name, "location": {"lat": b[0], "lng": b[1]}, "address": "罗湖区",
             "province": "广东省", "city": "深圳市", "area": "罗湖区", "telephone": "",
             "uid": f"uid-{i}", "detail_info": {"tag": "生活服务;公共厕所", "shop_hours": "24小时"}}
            for i, (name, b) in enumerate(zip(NAMES, bd, strict=True))
        ],
    }  # fmt: skip
    path = tmp_path / "baidu.json"
    path.write_text(json.dumps(answer, ensure_ascii=False), encoding="utf-8")
    report = ingest(fresh_db, path, layer="toilet", source="baidu")
    assert report.outcome == "ok" and report.inserted == 3 and report.crs == "bd09"
    assert report.format == "vendor-json"
    stored = _stored(fresh_db, "baidu")
    assert [r["source_id"] for r in stored] == ["uid-0", "uid-1", "uid-2"]
    assert [r["phone"] for r in stored] == [None, None, None]
    for r, lon, lat in zip(stored, LON, LAT, strict=True):
        assert r["lon"] == pytest.approx(lon, abs=1e-6) and r["lat"] == pytest.approx(lat, abs=1e-6)


# --- Excel ----------------------------------------------------------------------------------


def _workbook(tmp_path: Path, *, bad_row: bool = False) -> Path:
    book = openpyxl.Workbook()
    notes = book.active
    assert notes is not None
    notes.title = "填表说明"
    notes.append(["本表由罗湖区城管局提供，坐标为 WGS84。"])
    notes.append(["字段说明：名称、地址、经度、纬度"])
    data = book.create_sheet("公厕")
    data.append(["罗湖区公共厕所一览表（2024 年）"])
    data.merge_cells("A1:F1")
    data.append(["编号", "名称", "地址", "经度", "纬度", "开放时间"])
    for i, (name, lon, lat) in enumerate(zip(NAMES, LON, LAT, strict=True)):
        data.append([f"GC-{i + 1}", name, f"罗湖区{i + 1}号", lon, lat, "周一至周日 06:00-23:00"])
    if bad_row:
        data.append(["GC-9", "坏行", "", "东经", 22.55, None])
    path = tmp_path / "toilets.xlsx"
    book.save(path)
    return path


def _xls_workbook(tmp_path: Path) -> Path:
    """An Excel 97-2003 .xls as older bureau systems still export it (written with xlwt).

    An explanation sheet first, a title merged over the header, Chinese headers, ids that the
    binary format stores as floats (60001449.0) and a date column.
    """
    book = xlwt.Workbook(encoding="utf-8")
    notes = book.add_sheet("填表说明")
    notes.write(0, 0, "本表由罗湖区城管局提供，坐标为 WGS84。")
    notes.write(1, 0, "字段说明：名称、地址、经度、纬度")
    data = book.add_sheet("公厕")
    data.write_merge(0, 0, 0, 6, "罗湖区公共厕所一览表（2024 年）")
    data.write(1, 0, "填报单位：罗湖区城市管理和综合执法局")  # a note row under the title
    for j, header in enumerate(["编号", "名称", "地址", "经度", "纬度", "开放时间", "更新日期"]):
        data.write(2, j, header)
    dated = xlwt.easyxf(num_format_str="YYYY-MM-DD")
    for i, (name, lon, lat) in enumerate(zip(NAMES, LON, LAT, strict=True)):
        cells = [60001449 + i, name, f"罗湖区{i + 1}号", lon, lat, "周一至周日 06:00-23:00"]
        for j, value in enumerate(cells):
            data.write(3 + i, j, value)
        data.write(3 + i, 6, datetime.date(2024, 3, 1 + i), dated)
    path = tmp_path / "toilets.xls"
    book.save(str(path))
    return path


@pytest.mark.parametrize(
    ("suffix", "ids"),
    [
        ("xlsx", ["GC-1", "GC-2", "GC-3"]),
        # .xls stores every number as a float: 60001449.0 must read as the id 60001449
        ("xls", ["60001449", "60001450", "60001451"]),
    ],
)
def test_excel_with_explanation_sheet_and_title_row(
    fresh_db: str, tmp_path: Path, suffix: str, ids: list[str]
) -> None:
    path = _workbook(tmp_path) if suffix == "xlsx" else _xls_workbook(tmp_path)
    assert detect_format(path) == "excel"  # an .xlsx was taken for a zipped Shapefile
    report_path = tmp_path / "report.json"
    done = run_cli(
        fresh_db, "ingest", str(path), "--layer", "toilet", "--source", suffix,
        "--mapping", str(_excel_mapping(tmp_path)), "--report", str(report_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())
    assert (report["format"], report["sheet"], report["inserted"]) == ("excel", "公厕", 3)
    stored = _stored(fresh_db, suffix)
    # the 编号 column is the source's id although the mapping does not name it
    assert [r["source_id"] for r in stored] == ids
    assert [r["name"] for r in stored] == NAMES
    assert [r["address"] for r in stored] == ["罗湖区1号", "罗湖区2号", "罗湖区3号"]
    assert {r["opening_hours_raw"] for r in stored} == {"周一至周日 06:00-23:00"}
    for r, lon, lat in zip(stored, LON, LAT, strict=True):
        assert (r["lon"], r["lat"]) == pytest.approx((lon, lat), abs=1e-9)


def _two_row_header(tmp_path: Path, suffix: str) -> Path:
    """A sheet whose header takes two rows: 坐标 merged over 经度 | 纬度, the other headers merged
    down over both rows, a title merged above (as statistics bureaus lay tables out)."""
    upper = ["编号", "名称", "地址", "坐标", None, "开放时间"]
    lower = [None, None, None, "经度", "纬度", None]
    records = [
        [f"GC-{i}", name, f"罗湖区{i}号", lon, lat, "24小时"]
        for i, (name, lon, lat) in enumerate(zip(NAMES, LON, LAT, strict=True))
    ]
    path = tmp_path / f"two-rows.{suffix}"
    if suffix == "xlsx":
        book = openpyxl.Workbook()
        sheet = book.active
        assert sheet is not None
        for row in (["罗湖区公共厕所一览表"], upper, lower, *records):
            sheet.append(row)
        for cells in ("A1:F1", "D2:E2", "A2:A3", "B2:B3", "C2:C3", "F2:F3"):
            sheet.merge_cells(cells)
        book.save(path)
        return path
    xls = xlwt.Workbook(encoding="utf-8")
    sheet = xls.add_sheet("公厕")
    sheet.write_merge(0, 0, 0, 5, "罗湖区公共厕所一览表")
    sheet.write_merge(1, 1, 3, 4, "坐标")
    for j in (0, 1, 2, 5):
        sheet.write_merge(1, 2, j, j, upper[j])
    sheet.write(2, 3, "经度")
    sheet.write(2, 4, "纬度")
    for i, record in enumerate(records):
        for j, value in enumerate(record):
            sheet.write(3 + i, j, value)
    xls.save(str(path))
    return path


@pytest.mark.parametrize("suffix", ["xlsx", "xls"])
def test_two_row_header_under_a_title(fresh_db: str, tmp_path: Path, suffix: str) -> None:
    path = _two_row_header(tmp_path, suffix)
    source = open_source(path)
    assert source.columns == ["编号", "名称", "地址", "经度", "纬度", "开放时间"]
    assert source.options["header_row"] == 3  # the records start on the sheet's row 4
    assert next(source.chunks()).rows.tolist() == [4, 5, 6]
    done = run_cli(
        fresh_db, "ingest", str(path), "--layer", "toilet", "--source", suffix,
        "--mapping", str(_excel_mapping(tmp_path)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stored = _stored(fresh_db, suffix)
    assert [r["source_id"] for r in stored] == ["GC-0", "GC-1", "GC-2"]
    for r, lon, lat in zip(stored, LON, LAT, strict=True):
        assert (r["lon"], r["lat"]) == pytest.approx((lon, lat), abs=1e-9)


def test_unnamed_column_does_not_make_the_first_record_a_header(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["名称", "地址", "电话", None])  # the last column has no name
    sheet.append(["东门公厕", None, "0755-82345678", "备注：夜间锁门"])  # all text, no address
    sheet.append(["翠竹公厕", "翠竹路1号", "0755-82345679", None])
    path = tmp_path / "unnamed.xlsx"
    book.save(path)
    source = open_source(path)
    assert source.columns == ["名称", "地址", "电话", "column 4"]
    assert next(source.chunks()).frame["名称"].tolist() == ["东门公厕", "翠竹公厕"]


def test_xls_sheet_and_header_row_flags(fresh_db: str, tmp_path: Path) -> None:
    path = _xls_workbook(tmp_path)
    source = open_source(path, sheet="公厕", header_row=3)
    assert source.columns[:2] == ["编号", "名称"] and source.total == 3
    chunk = next(source.chunks())
    assert chunk.frame["更新日期"].tolist()[0] == datetime.datetime(2024, 3, 1)
    assert chunk.frame["编号"].tolist() == [60001449, 60001450, 60001451]
    assert chunk.rows.tolist() == [4, 5, 6]  # the sheet's row numbers, as Excel shows them
    # the header found by itself under the merged title and the note row: the same table
    assert open_source(path).options == {"sheet": "公厕", "header_row": 3}
    report_path = tmp_path / "report.json"
    done = run_cli(
        fresh_db, "ingest", str(path), "--layer", "toilet", "--source", "xls",
        "--mapping", str(_excel_mapping(tmp_path)), "--sheet", "2", "--header-row", "3",
        "--report", str(report_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(report_path.read_text())["inserted"] == 3
    # the explanation sheet has no table: asked for, it says so and names the flag to use
    done = run_cli(fresh_db, "ingest", str(path), "--layer", "toilet", "--sheet", "填表说明")
    assert done.returncode != 0 and "no header row" in done.stderr
    assert "--header-row" in done.stderr


@pytest.mark.parametrize("encoding", ["gbk", "utf-16"])
def test_text_table_named_xls_is_read_as_csv(fresh_db: str, tmp_path: Path, encoding: str) -> None:
    # web systems' "export to Excel" writes a tab-separated text (GBK, or Excel's own UTF-16
    # "Unicode text") under an .xls name
    lines = ["编号\t名称\t地址\t经度\t纬度\t开放时间"] + [
        f"GC-{i}\t{name}\t罗湖区{i}号\t{lon}\t{lat}\t24小时"
        for i, (name, lon, lat) in enumerate(zip(NAMES, LON, LAT, strict=True))
    ]
    path = tmp_path / "导出.xls"
    path.write_bytes("\r\n".join(lines).encode(encoding))
    assert detect_format(path) == "csv"
    report_path = tmp_path / "report.json"
    done = run_cli(
        fresh_db, "ingest", str(path), "--layer", "toilet", "--source", encoding,
        "--mapping", str(_excel_mapping(tmp_path)), "--report", str(report_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(report_path.read_text())["inserted"] == 3
    stored = _stored(fresh_db, encoding)
    assert [r["source_id"] for r in stored] == ["GC-0", "GC-1", "GC-2"]
    assert [r["name"] for r in stored] == NAMES


def test_html_named_xls_says_what_to_do(fresh_db: str, tmp_path: Path) -> None:
    path = tmp_path / "导出.xls"
    path.write_text(
        "<html><head><meta charset='utf-8'></head><body><table><tr><td>名称</td></tr></table>"
        "</body></html>",
        encoding="utf-8",
    )
    done = run_cli(fresh_db, "ingest", str(path), "--layer", "toilet")
    assert done.returncode != 0
    assert "web page (HTML)" in done.stderr and "save it as .xlsx" in done.stderr
    path.write_bytes(bytes(range(256)) * 4)  # binary, neither a workbook nor text
    done = run_cli(fresh_db, "ingest", str(path), "--layer", "toilet")
    assert done.returncode != 0 and "not a valid Excel workbook" in done.stderr


def _excel_mapping(tmp_path: Path) -> Path:
    path = tmp_path / "xl.toml"
    path.write_text(
        '[geometry]\nx = "经度"\ny = "纬度"\n[fields]\nname = "名称"\naddress = "地址"\n'
        'opening_hours = "开放时间"\n',
        encoding="utf-8",
    )
    return path


def test_xlsx_sheet_and_header_row_flags_and_sheet_row_numbers(
    fresh_db: str, tmp_path: Path
) -> None:
    path = _workbook(tmp_path, bad_row=True)
    mapping = str(_excel_mapping(tmp_path))
    report_path = tmp_path / "report.json"
    done = run_cli(
        fresh_db, "ingest", str(path), "--layer", "toilet", "--mapping", mapping,
        "--sheet", "2", "--header-row", "2", "--report", str(report_path),
    )  # fmt: skip
    assert done.returncode == 1
    report = json.loads(report_path.read_text())
    # the bad record is on the sheet's row 6 (title, header, three rows): as Excel shows it
    assert [(r["row"], r["field"]) for r in report["rejects"]] == [(6, "经度")]
    assert report["row_numbers"].startswith("row = the sheet's row")
    assert "sheet's row" in done.stderr
    done = run_cli(
        fresh_db, "ingest", str(path), "--layer", "toilet", "--mapping", mapping,
        "--sheet", "公厕", "--skip-invalid",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = run_cli(fresh_db, "ingest", str(path), "--layer", "toilet", "--sheet", "说明")
    assert done.returncode != 0 and "no such sheet" in done.stderr and "公厕" in done.stderr


# --- encodings ------------------------------------------------------------------------------


def _frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"source_id": ["T-1", "T-2", "T-3"], "name": NAMES}, geometry=points(LON, LAT), crs=4326
    )


def test_gbk_shapefile_without_cpg(fresh_db: str, ingest: Ingest, tmp_path: Path) -> None:
    path = tmp_path / "gbk.shp"
    pyogrio.write_dataframe(_frame(), path, encoding="GBK")
    path.with_suffix(".cpg").unlink()
    dbf = path.with_suffix(".dbf")
    data = bytearray(dbf.read_bytes())
    data[29] = 0  # no code page: what Chinese GIS exports write
    dbf.write_bytes(bytes(data))
    report = ingest(fresh_db, path, layer="toilet", source="gbk")
    assert report.outcome == "ok" and report.inserted == 3
    assert [r["name"] for r in _stored(fresh_db, "gbk")] == NAMES


TRADITIONAL_NAMES = ["東門公廁", "翠竹智慧公廁（翠竹路）", "羅湖口岸公廁"]


def _big5_shapefile(tmp_path: Path, code_page: int) -> Path:
    """A Big5 Shapefile (Hong Kong/Taiwan GIS exports) without `.cpg`, DBF code page as given."""
    frame = _frame()
    frame["name"] = TRADITIONAL_NAMES
    path = tmp_path / "big5.shp"
    pyogrio.write_dataframe(frame, path, encoding="big5")
    path.with_suffix(".cpg").unlink()
    dbf = path.with_suffix(".dbf")
    data = bytearray(dbf.read_bytes())
    data[29] = code_page
    dbf.write_bytes(bytes(data))
    return path


def test_dbf_code_page_byte_is_honoured(fresh_db: str, ingest: Ingest, tmp_path: Path) -> None:
    # 0x78: Big5 (code page 950); read as GB18030 (the guess without a code page) it is mojibake
    report = ingest(fresh_db, _big5_shapefile(tmp_path, 0x78), layer="toilet", source="ldid")
    assert report.outcome == "ok" and report.inserted == 3
    assert [r["name"] for r in _stored(fresh_db, "ldid")] == TRADITIONAL_NAMES


def test_dbf_encoding_flag(fresh_db: str, tmp_path: Path) -> None:
    path = _big5_shapefile(tmp_path, 0)
    done = run_cli(fresh_db, "ingest", str(path), "--layer", "toilet", "--source", "guess")
    assert done.returncode == 0, done.stderr
    # no code page, no .cpg: the guess (GB18030) reads Big5 bytes as other characters
    assert [r["name"] for r in _stored(fresh_db, "guess")] != TRADITIONAL_NAMES
    done = run_cli(
        fresh_db, "ingest", str(path), "--layer", "toilet", "--source", "flag", "--encoding", "big5"
    )
    assert done.returncode == 0, done.stderr
    assert [r["name"] for r in _stored(fresh_db, "flag")] == TRADITIONAL_NAMES


def test_csv_encoding_flag(fresh_db: str, tmp_path: Path) -> None:
    path = tmp_path / "big5.csv"
    lines = ["id,name,lon,lat"] + [
        f"B-{i},{n},{x},{y}" for i, (n, x, y) in enumerate(zip(NAMES, LON, LAT, strict=True))
    ]
    traditional = ["東門公廁", "翠竹智慧公廁", "羅湖口岸公廁"]
    text = "\n".join(lines).replace(NAMES[0], traditional[0]).replace(NAMES[1], traditional[1])
    text = text.replace(NAMES[2], traditional[2])
    path.write_bytes(text.encode("big5"))
    done = run_cli(
        fresh_db, "ingest", str(path), "--layer", "toilet", "--source", "b5", "--encoding", "big5"
    )
    assert done.returncode == 0, done.stderr
    assert [r["name"] for r in _stored(fresh_db, "b5")] == traditional


# --- messages name the real source of a setting ----------------------------------------------


def test_crs_flag_is_named_not_the_mapping(fresh_db: str, tmp_path: Path) -> None:
    path = tmp_path / "f3.shp"
    pyogrio.write_dataframe(_frame().to_crs(4547), path)
    mapping = tmp_path / "f3.toml"
    mapping.write_text('layer = "toilet"\n', encoding="utf-8")
    done = run_cli(fresh_db, "ingest", str(path), "--mapping", str(mapping), "--crs", "gcj02")
    assert done.returncode == 1
    assert "--crs says gcj02" in done.stderr and "f3.toml" not in done.stderr
    mapping.write_text('layer = "toilet"\n[geometry]\ncrs = "gcj02"\n', encoding="utf-8")
    done = run_cli(fresh_db, "ingest", str(path), "--mapping", str(mapping))
    assert "mapping f3.toml ([geometry] crs) says gcj02" in done.stderr


def test_csv_rows_are_lines(fresh_db: str, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("name,lon,lat\nA,114.12,22.55\nB,east,22.55\n", encoding="utf-8")
    report_path = tmp_path / "r.json"
    done = run_cli(fresh_db, "ingest", str(path), "--layer", "toilet", "--report", str(report_path))
    assert done.returncode == 1
    report = json.loads(report_path.read_text())
    assert report["rejects"][0]["row"] == 3 and report["row_numbers"].startswith("row = the line")


def test_shapefile_rows_are_records(fresh_db: str, tmp_path: Path) -> None:
    frame = _frame()
    frame.loc[1, "name"] = None
    path = tmp_path / "t.shp"
    pyogrio.write_dataframe(frame, path, encoding="UTF-8")
    report_path = tmp_path / "r.json"
    done = run_cli(fresh_db, "ingest", str(path), "--layer", "toilet", "--report", str(report_path))
    assert done.returncode == 1
    report = json.loads(report_path.read_text())
    assert [(r["row"], r["field"]) for r in report["rejects"]] == [(2, "name")]
    assert report["row_numbers"].startswith("row = the record's position")
    assert "record's position" in done.stderr


# --- the summary table ----------------------------------------------------------------------


@pytest.mark.parametrize("width", [40, 80])
def test_summary_never_truncates_a_number(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    buffer = io.StringIO()  # a log: not a terminal
    monkeypatch.setattr(console, "out", Console(file=buffer, width=width))
    row = {"source": "facilities-1000000", "outcome": "ok", "read": 1_000_000,
           "inserted": 1_000_000, "updated": 0, "unchanged": 0, "removed": 0, "rejected": 0,
           "warnings": 123_456}  # fmt: skip
    console.summary("ingest facilities.csv", [row])
    text = buffer.getvalue()
    assert "1,000,000" in text and "123,456" in text and "…" not in text
    assert "outcome" in text and "inserted" in text
    assert all(len(line) <= width for line in text.splitlines())
    # a narrow table stays a table
    buffer.seek(0)
    buffer.truncate()
    console.summary("small", [{"read": 3, "inserted": 3}])
    assert "┃" in buffer.getvalue() or "│" in buffer.getvalue()


@pytest.mark.parametrize("width", [40, 80])
def test_issue_table_keeps_row_numbers_whole(width: int) -> None:
    buffer = io.StringIO()
    log = Console(file=buffer, width=width)
    issue = {"severity": "error", "where": "row 1000001", "field": "经度", "value": "东经[1]",
             "reason": "not a number: a longer explanation that may wrap inside its cell"}  # fmt: skip
    console.table("1,000,000 error(s)", [issue], console=log, fold=("field", "value", "reason"))
    text = buffer.getvalue()
    assert "row 1000001" in text and "1,000,000 error(s)" in text
    assert "东经[1]" in text  # a value is no markup
    assert all(cell_len(line) <= width for line in text.splitlines())
