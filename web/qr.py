"""QR codes of facility pages: single codes (SVG/PNG) and printable A4 sheets per layer.

Posters and door stickers get dirty, torn and photographed at an angle: every code uses error
correction level H (30 % of the code may be lost) and the standard 4-module quiet zone.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

import segno

#: error correction for print: H recovers from 30 % damage
ERROR = "h"
#: quiet zone in modules (ISO/IEC 18004 asks for at least 4)
BORDER = 4

#: the sheet: A4 portrait in millimetres, COLUMNS × ROWS codes per page; the row height
#: divides the page height so a printer at 100 % breaks pages between rows, never across one
PAGE_W, PAGE_H = 210.0, 297.0
COLUMNS, ROWS = 4, 5
CELL_W, CELL_H = PAGE_W / COLUMNS, PAGE_H / ROWS
CODE_MM = 40.0
NAME_PT_MM = 3.2
MAX_NAME_CHARS_PER_LINE = 14


def facility_url(public_url: str, facility_id: str) -> str:
    """The public address of a facility page: what its QR code encodes."""
    return f"{public_url.rstrip('/')}/facilities/{facility_id}"


def make_code(url: str) -> segno.QRCode:
    """The QR code of a URL, at poster-grade error correction."""
    return segno.make_qr(url, error=ERROR, boost_error=False)


def svg(url: str, *, title: str | None = None, scale: int = 8) -> bytes:
    """A standalone SVG of the URL's code (scalable for print)."""
    buffer = io.BytesIO()
    make_code(url).save(
        buffer, kind="svg", scale=scale, border=BORDER, title=title, dark="#000", light="#fff"
    )
    return buffer.getvalue()


def png(url: str, *, scale: int = 10) -> bytes:
    """A PNG of the URL's code, `scale` pixels per module."""
    buffer = io.BytesIO()
    make_code(url).save(buffer, kind="png", scale=scale, border=BORDER)
    return buffer.getvalue()


def path_data(code: segno.QRCode) -> tuple[str, int]:
    """(SVG path of the dark modules in module units, width in modules incl. quiet zone)."""
    parts: list[str] = []
    size = 0
    for y, row in enumerate(code.matrix_iter(border=BORDER)):
        cells = list(row)
        size = len(cells)
        x = 0
        while x < size:
            if cells[x]:
                start = x
                while x < size and cells[x]:
                    x += 1
                parts.append(f"M{start} {y}h{x - start}v1h{start - x}z")
            else:
                x += 1
    return "".join(parts), size


@dataclass(frozen=True)
class SheetItem:
    """One code on a sheet: the facility's name and the URL its code opens."""

    name: str
    url: str


def _name_lines(name: str) -> list[str]:
    lines = [
        name[i : i + MAX_NAME_CHARS_PER_LINE] for i in range(0, len(name), MAX_NAME_CHARS_PER_LINE)
    ]
    if len(lines) > 2:
        lines = [lines[0], lines[1][:-1] + "…"]
    return lines or [""]


def sheet(items: Sequence[SheetItem], *, title: str) -> str:
    """An SVG of A4 pages (stacked) with each item's code and its name under it."""
    pages = max(1, -(-len(items) // (COLUMNS * ROWS)))
    height = pages * PAGE_H
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{PAGE_W}mm" height="{height}mm" '
        f'viewBox="0 0 {PAGE_W} {height}">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{PAGE_W}" height="{height}" fill="#fff"/>',
    ]
    for index, item in enumerate(items):
        page, slot = divmod(index, COLUMNS * ROWS)
        row, column = divmod(slot, COLUMNS)
        x0 = column * CELL_W
        y0 = page * PAGE_H + row * CELL_H
        data, size = path_data(make_code(item.url))
        scale = CODE_MM / size
        cx = x0 + (CELL_W - CODE_MM) / 2
        cy = y0 + 4
        out.append(
            f'<g><rect x="{x0:.2f}" y="{y0:.2f}" width="{CELL_W:.2f}" height="{CELL_H:.2f}" '
            'fill="none" stroke="#bbb" stroke-width="0.2" stroke-dasharray="1 1"/>'
            f'<path transform="translate({cx:.3f} {cy:.3f}) scale({scale:.5f})" d="{data}" '
            'fill="#000"/>'
        )
        for n, line in enumerate(_name_lines(item.name)):
            ty = cy + CODE_MM + 4 + n * (NAME_PT_MM + 1)
            out.append(
                f'<text x="{x0 + CELL_W / 2:.2f}" y="{ty:.2f}" font-size="{NAME_PT_MM}" '
                'text-anchor="middle" font-family="Noto Sans CJK SC, sans-serif">'
                f"{escape(line)}</text>"
            )
        out.append(f"<desc>{escape(item.url)}</desc></g>")
    out.append("</svg>\n")
    return "".join(out)
