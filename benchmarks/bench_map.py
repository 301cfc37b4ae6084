"""Map page weight: ``GET /`` vs naive Folium (every facility a popup marker in one cluster).

For each size (default 20,000 and 100,000 facilities), in a database of its own:
1. ``servicemap sample --scale N`` loaded with ``servicemap ingest`` (not timed);
2. ours: ``GET /`` from a real uvicorn server (median of several requests; the page's facility
   counts query and Folium render included), its size in bytes;
3. baseline: the naive Folium page on the same data in the same run: every facility read from
   the database, one ``folium.Marker`` with a ``folium.Popup`` (name, address, hours, phone) in
   one ``MarkerCluster``, rendered to HTML; its build time (query included) and size;
4. headless Chromium (only localhost reachable): navigation → first facility drawn at the
   district view and at street level, and → a facility's popup opened with its disclosures.
Prints both ratios (targets: ≥ 20× smaller and ≥ 20× faster); exits 1 if one is missed.

    python -m benchmarks.bench_map [--rows N ...] [--quick] [--no-browser]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from html import escape
from pathlib import Path

import httpx
import psycopg

TARGET_RATIO = 20.0
REQUESTS = 7
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _load(url: str, rows: int, tmp: Path) -> None:
    from ingest.sample import write_scaled

    gpkg = write_scaled(tmp, rows)["gpkg"]
    servicemap = Path(sys.executable).with_name("servicemap")
    done = subprocess.run(
        [str(servicemap), "ingest", str(gpkg), "--layer-field", "layer", "--source", "scale"],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print(done.stdout, done.stderr, sep="\n")
        raise SystemExit(f"ingest failed with exit code {done.returncode}")


def naive_page(url: str) -> tuple[str, float]:
    """The naive Folium map of every facility; returns (html, seconds from query to HTML)."""
    import folium
    from folium.plugins import MarkerCluster

    from geoservice.db.connection import connect
    from geoservice.settings import DistrictSettings

    district = DistrictSettings()
    started = time.perf_counter()
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT f.name, f.address, coalesce(f.opening_hours, f.opening_hours_raw) AS hours,"
            " f.phone, ST_Y(f.geom) AS lat, ST_X(f.geom) AS lon"
            " FROM facilities f WHERE f.status <> 'removed'"
        ).fetchall()
    fmap = folium.Map(location=list(district.centre), zoom_start=13)
    cluster = MarkerCluster().add_to(fmap)
    for row in rows:
        popup = (
            f"<b>{escape(row['name'])}</b><br>{escape(row['address'] or '')}<br>"
            f"{escape(row['hours'] or '')}<br>{escape(row['phone'] or '')}"
        )
        folium.Marker([row["lat"], row["lon"]], popup=folium.Popup(popup, max_width=300)).add_to(
            cluster
        )
    html = fmap.get_root().render()
    return html, time.perf_counter() - started


class _Server:
    """The app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, url: str) -> None:
        import uvicorn

        from geoservice.app import create_app
        from geoservice.settings import DatabaseSettings, Settings

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        settings = Settings(db=DatabaseSettings(DATABASE_URL=url))
        config = uvicorn.Config(create_app(settings), log_level="warning")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self.base

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def warm_up(base: str) -> None:
    """Let the H3 endpoint finish its first-use work after the bulk load (as a running server
    would have), so that the browser timings measure the page, not that catch-up."""
    with httpx.Client(base_url=base, timeout=120) as client:
        for _ in range(20):
            started = time.perf_counter()
            response = client.get("/api/v1/h3", params={"resolution": 7})
            if response.status_code == 200 and time.perf_counter() - started < 1:
                return
        print("  (the H3 endpoint stayed slow after 20 warm-up requests)")


def our_page(base: str) -> tuple[int, float]:
    """(bytes, median seconds) of GET / over HTTP, after one warm-up request."""
    with httpx.Client(base_url=base, timeout=60) as client:
        client.get("/?lang=zh-Hans").raise_for_status()
        times = []
        size = 0
        for _ in range(REQUESTS):
            started = time.perf_counter()
            response = client.get("/?lang=zh-Hans")
            times.append(time.perf_counter() - started)
            response.raise_for_status()
            size = len(response.content)
    return size, statistics.median(times)


def browser_times(base: str, at: tuple[float, float]) -> dict[str, float]:
    """Seconds in headless Chromium from navigation to facilities drawn and a popup opened."""
    from playwright.sync_api import Route, sync_playwright

    def local_only(route: Route) -> None:
        if route.request.url.startswith(base):
            route.continue_()
        else:
            route.abort()

    times: dict[str, float] = {}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # a cold context per measurement: nothing cached from the one before
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.route("**/*", local_only)
            page = context.new_page()
            started = time.perf_counter()
            page.goto(base + "/?lang=zh-Hans")
            page.wait_for_selector(".sm-marker, .sm-cluster, .sm-agg", timeout=120_000)
            times["district view: first facility drawn"] = time.perf_counter() - started
            context.close()

            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.route("**/*", local_only)
            page = context.new_page()
            started = time.perf_counter()
            page.goto(f"{base}/?lang=zh-Hans&at={at[0]},{at[1]},17")
            marker = page.locator(".sm-marker").first
            marker.wait_for(timeout=120_000)
            times["street level: first facility drawn"] = time.perf_counter() - started
            clicked = time.perf_counter()
            # dispatched to the marker itself: a neighbour may overlap it at this density
            marker.dispatch_event("click")
            page.wait_for_selector(".sm-popup .sm-stage", timeout=120_000)
            now = time.perf_counter()
            times["street level: popup with disclosures open"] = now - started
            times["click → popup with disclosures"] = now - clicked
            context.close()
        finally:
            browser.close()
    return times


def run(rows: int, browser: bool) -> bool:
    """Measure one size; True when both targets are met."""
    from benchmarks.common import own_database

    with own_database(f"map_{rows}") as url:
        with tempfile.TemporaryDirectory(prefix="bench_map_") as tmp:
            started = time.perf_counter()
            _load(url, rows, Path(tmp))
        # statistics as a running server has them (autovacuum would get there on its own)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")
            print(f"{rows:,} facilities loaded in {time.perf_counter() - started:.1f}s")
        with _Server(url) as base:
            warm_up(base)
            ours_bytes, ours_s = our_page(base)
            naive_html, naive_s = naive_page(url)
            naive_bytes = len(naive_html.encode())
            del naive_html
            size_ratio = naive_bytes / ours_bytes
            time_ratio = naive_s / ours_s
            print(f"  GET /        {ours_bytes:>12,} bytes  {ours_s * 1000:9.1f} ms (median)")
            print(f"  naive Folium {naive_bytes:>12,} bytes  {naive_s * 1000:9.1f} ms")
            print(
                f"  ratio: {size_ratio:,.0f}× smaller (target ≥ {TARGET_RATIO:.0f}), "
                f"{time_ratio:,.0f}× faster (target ≥ {TARGET_RATIO:.0f})"
            )
            if browser:
                with psycopg.connect(url) as conn:
                    spot = conn.execute(
                        "SELECT ST_Y(geom), ST_X(geom) FROM facilities ORDER BY id LIMIT 1"
                    ).fetchone()
                assert spot is not None
                for label, seconds in browser_times(base, (spot[0], spot[1])).items():
                    print(f"  chromium: {label}: {seconds * 1000:,.0f} ms")
    return size_ratio >= TARGET_RATIO and time_ratio >= TARGET_RATIO


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_map", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[20_000, 100_000], help="facility counts"
    )
    parser.add_argument("--quick", action="store_true", help="one small run (5,000)")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium timings")
    args = parser.parse_args(argv)  # None: sys.argv (python -m benchmarks NAME --option)
    sizes = [5_000] if args.quick else args.rows
    ok = True
    for rows in sizes:
        print(f"--- {rows:,} facilities")
        ok = run(rows, browser=not args.no_browser) and ok
    if not ok:
        print("below target")
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
