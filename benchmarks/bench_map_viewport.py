"""What the map draws per viewport: dense layers from vector tiles vs marker icons, same run.

At zoom 15-16 the map draws a layer with more than ``web.map.TILE_BUDGET`` facilities in view
from the vector tiles on a canvas (leaflet.vectorgrid). The baseline is the same page with that
script withheld (the map then falls back to one marker icon per facility, as before). For each
size of the scaled sample (default 20,000 facilities), in a database of its own, headless
Chromium opens the map in a cold context (only localhost reachable) at the district view, and
at street level (zoom 16 over the densest res-8 H3 cell) followed by a pan by keyboard (8 x 80 px);
each view ``--repeat`` times per mode (medians). Per view and mode it prints:

- ms from navigation (or the pan) until no API request or tile is in flight,
- ms the main thread spent in script, style and layout (Chromium's Performance metrics),
- API and tile requests and their response bytes,
- marker and cluster icons, and all DOM elements of the page;

then the ratios tiles / markers.

    python -m benchmarks.bench_map_viewport [--rows N ...] [--repeat R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from benchmarks.bench_map import CHROMIUM, CHROMIUM_ARGS, _load, _Server, warm_up

VIEWPORT = {"width": 1280, "height": 800}
STREET_ZOOM = 16
VECTORGRID = "leaflet.vectorgrid"


@dataclass
class Visit:
    """What one view cost the browser."""

    ms: float = 0.0
    busy_ms: float = 0.0
    requests: int = 0
    bytes: int = 0
    icons: int = 0
    elements: int = 0


def browse(base: str, at: tuple[float, float] | None, tiles: bool) -> list[Visit]:
    """[the view] at the district view (`at` None), or [street level, the pan after it]."""
    from playwright.sync_api import Error, Page, Request, Route, sync_playwright

    def settled(page: Page) -> None:
        page.wait_for_selector('body.sm-ready[data-pending="0"]', timeout=120_000)

    def route(route: Route) -> None:
        url = route.request.url
        # the baseline: without VectorGrid the map draws every facility as a marker icon
        if not url.startswith(base) or (not tiles and VECTORGRID in url):
            route.abort()
        else:
            route.continue_()

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.route("**/*", route)
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")

            def busy() -> float:
                metrics = cdp.send("Performance.getMetrics")["metrics"]
                values = {m["name"]: m["value"] for m in metrics}
                kinds = ("ScriptDuration", "RecalcStyleDuration", "LayoutDuration")
                return sum(values.get(k, 0.0) for k in kinds) * 1000

            visits = [Visit()]

            def record(request: Request) -> None:
                if "/api/" in request.url or "/ogc/" in request.url:
                    visits[-1].requests += 1
                    try:
                        visits[-1].bytes += request.sizes()["responseBodySize"]
                    except Error:  # finished as the page closed: not this view's
                        pass

            page.on("requestfinished", record)
            url = f"{base}/?lang=en" + (f"&at={at[0]},{at[1]},{STREET_ZOOM}" if at else "")
            before, started = busy(), time.perf_counter()
            page.goto(url)
            page.wait_for_selector(".sm-marker, .sm-cluster, .sm-agg, canvas.leaflet-tile")
            settled(page)
            _finish(page, visits[-1], started, busy() - before)
            if at is None:
                return visits
            visits.append(Visit())
            before, started = busy(), time.perf_counter()
            # by keyboard (a drag may start on a marker): eight presses of 80 px; the refresh
            # goes out 120 ms after the move ends: wait for it, then for its end
            page.focus(".sm-map")
            with page.expect_request(lambda r: "/api/v1/h3" in r.url or "/ogc/" in r.url):
                for _ in range(8):
                    page.keyboard.press("ArrowRight")
            settled(page)
            _finish(page, visits[-1], started, busy() - before)
            return visits
        finally:
            browser.close()


def _finish(page: object, visit: Visit, started: float, busy_ms: float) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    visit.ms = (time.perf_counter() - started) * 1000
    visit.busy_ms = busy_ms
    visit.icons = page.locator(".leaflet-marker-icon").count()
    visit.elements = page.locator("*").count()


def densest_spot(url: str) -> tuple[float, float]:
    """The centre of the res-8 H3 cell holding the most facilities."""
    import h3

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT ST_Y(geom), ST_X(geom) FROM facilities WHERE status <> 'removed'"
        ).fetchall()
    counts: dict[str, int] = {}
    for lat, lon in rows:
        cell = h3.latlng_to_cell(lat, lon, 8)
        counts[cell] = counts.get(cell, 0) + 1
    lat, lon = h3.cell_to_latlng(max(counts, key=lambda c: counts[c]))
    return float(lat), float(lon)


def median(visits: list[Visit]) -> Visit:
    """The median of each figure over repeated visits."""
    return Visit(
        *(statistics.median(getattr(v, name) for v in visits) for name in Visit.__annotations__)
    )


def line(label: str, v: Visit) -> str:
    return (
        f"  {label:<34} {v.ms:7,.0f} ms  busy {v.busy_ms:6,.0f} ms  {v.requests:4.0f} requests "
        f"{v.bytes:>10,.0f} bytes  {v.icons:5.0f} icons  {v.elements:6.0f} DOM elements"
    )


def run(rows: int, repeat: int) -> None:
    """Measure one size, both modes."""
    from benchmarks.common import own_database

    with own_database(f"viewport_{rows}") as url:
        with tempfile.TemporaryDirectory(prefix="bench_viewport_") as tmp:
            _load(url, rows, Path(tmp))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
        spot = densest_spot(url)
        print(f"--- {rows:,} facilities; street level at {spot[0]:.5f}, {spot[1]:.5f} z16")
        with _Server(url) as base:
            warm_up(base)
            views = ("district view", "street level, densest cell", "pan 8 x 80 px")
            found: dict[bool, list[list[Visit]]] = {}
            for _ in range(repeat):
                for tiles in (False, True):
                    visits = browse(base, None, tiles) + browse(base, spot, tiles)
                    found.setdefault(tiles, []).append(visits)
            for i, view in enumerate(views):
                markers = median([visits[i] for visits in found[False]])
                vector = median([visits[i] for visits in found[True]])
                print(line(f"{view}: markers", markers))
                print(line(f"{view}: vector tiles", vector))
                print(
                    f"  {'  ratio tiles / markers':<34} {vector.ms / markers.ms:7.2f}×    "
                    f"busy {vector.busy_ms / max(markers.busy_ms, 1):6.2f}×  "
                    f"{vector.requests / max(markers.requests, 1):13.2f}× "
                    f"{vector.bytes / max(markers.bytes, 1):10.2f}×  "
                    f"{vector.icons / max(markers.icons, 1):11.2f}×  "
                    f"{vector.elements / max(markers.elements, 1):13.2f}×"
                )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_map_viewport", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000], help="facility counts")
    parser.add_argument("--repeat", type=int, default=3, help="visits per view and mode")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    for rows in args.rows:
        run(rows, args.repeat)


if __name__ == "__main__":
    main()
