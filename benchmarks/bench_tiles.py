"""Vector tiles at z14-z16 throughput: servicemap vs tipg's tile endpoint on the same table.

Both servers run 2 workers over the same benchmark-owned database (1,000,000 facilities by
default, ``--rows``) and are loaded by ``wrk`` with 32 connections, each request a random tile
inside the district of one layer (toilets): one run per zoom (14, 15, 16) and one mixing them.
tipg gets the same work as ours: the same layer (``layer=toilet``), the same properties (its
``opening_hours`` text where ours computes ``open_now``), the same 64-unit buffer and no
feature cap (its default cuts a tile at 10,000 features). tipg lives in its own venv
(``.venv-tipg``, see bench_ogc). Target: ≥ 1.5 at each zoom.

Ours keeps the tiles it built (geoservice.query.tiles.TileCache, 64 MB per worker) while
facilities_version and the tile's sensors are unchanged; a district has few tiles per zoom, so
after the warm-up most requests are checks of a kept tile, as far as the tiles fit (at
1,000,000 facilities one zoom's toilet tiles take about half of it). The "rebuilt" column is
ours with (almost) every tile built anew: a thread bumps facilities_version (what any load
does) every 20 ms, so a kept tile hardly ever holds (each request checks, misses and builds).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from benchmarks.bench_nearest import scaled_database, serve
from benchmarks.bench_nearest import wrk as run_wrk
from benchmarks.bench_ogc import serve_tipg, tipg_python

TARGET = 1.5
LAYER = "toilet"
#: (label, lowest zoom, highest zoom) of each run
ZOOMS = [("z14", 14, 14), ("z15", 15, 15), ("z16", 16, 16), ("z14-16", 14, 16)]

#: a random tile at zoom 14-16 over the district; {path} gets z, x (column), y (row)
WRK_TILES = """
math.randomseed(os.time())
request = function()
  local z = {zmin} + math.random(0, {zspan})
  local lon = 114.09 + math.random() * 0.14
  local lat = 22.52 + math.random() * 0.10
  local n = 2 ^ z
  local x = math.floor((lon + 180) / 360 * n)
  local r = math.rad(lat)
  local y = math.floor((1 - math.log(math.tan(r) + 1 / math.cos(r)) / math.pi) / 2 * n)
  return wrk.format("GET", {path})
end
"""
OURS = f'string.format("/ogc/collections/{LAYER}/tiles/WebMercatorQuad/%d/%d/%d", z, y, x)'
TIPG = (
    'string.format("/collections/public.facilities/tiles/WebMercatorQuad/%d/%d/%d'
    f"?geom-column=geom&layer={LAYER}&properties=id,name,layer,status,accessible,opening_hours"
    '", z, x, y)'
)


def options(description: str) -> argparse.Namespace:
    """--rows / --seconds / --quick, from the command line however the module is started
    (``python -m benchmarks.bench_tiles --quick`` or ``python -m benchmarks tiles``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 8 s runs")
    args, _ = parser.parse_known_args(sys.argv[1:])
    if args.quick:
        args.rows, args.seconds = 100_000, 8
    return args


@contextmanager
def bumping(url: str) -> Iterator[None]:
    """facilities_version bumped every 20 ms meanwhile: (almost) no kept tile holds."""
    stop = threading.Event()

    def bump() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("UPDATE facilities_version SET n = n + 1")
                time.sleep(0.02)

    thread = threading.Thread(target=bump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def main() -> None:
    args = options(__doc__ or "")
    tipg_python()
    scripts = {
        label: (
            WRK_TILES.format(zmin=low, zspan=high - low, path=TIPG),
            WRK_TILES.format(zmin=low, zspan=high - low, path=OURS),
        )
        for label, low, high in ZOOMS
    }
    theirs: dict[str, tuple[float, float]] = {}
    ours: dict[str, tuple[float, float]] = {}
    rebuilt: dict[str, tuple[float, float]] = {}
    with scaled_database(args.rows, "tiles") as url:
        # tiles as ours: 64-unit buffer, no feature cap
        with serve_tipg(url, TIPG_MAX_FEATURES_PER_TILE="10000000", TIPG_TILE_BUFFER="64") as base:
            for label, (script, _) in scripts.items():
                run_wrk(base, script, 3)
                theirs[label] = run_wrk(base, script, args.seconds)
                print(f"tipg {label}: {theirs[label][0]:,.1f} tiles/s", flush=True)
        with serve(url) as base:
            for label, (_, script) in scripts.items():
                run_wrk(base, script, 3)
                ours[label] = run_wrk(base, script, args.seconds)
                print(f"ours {label}: {ours[label][0]:,.1f} tiles/s", flush=True)
            with bumping(url):
                for label, (_, script) in scripts.items():
                    rebuilt[label] = run_wrk(base, script, args.seconds)
                    print(f"ours rebuilt {label}: {rebuilt[label][0]:,.1f} tiles/s", flush=True)
    print(f"rows: {args.rows:,}; random {LAYER} tiles; 32 connections; 2 workers each")
    print(
        "zoom     tipg tiles/s (p99)    ours tiles/s (p99)    ratio   rebuilt tiles/s (p99)  ratio"
    )
    failed = []
    for label, _, _ in ZOOMS:
        (t_rps, t_p99), (o_rps, o_p99), (r_rps, r_p99) = theirs[label], ours[label], rebuilt[label]
        ratio = o_rps / t_rps if t_rps else float("inf")
        cold = r_rps / t_rps if t_rps else float("inf")
        print(
            f"{label:7}  {t_rps:9,.1f} ({t_p99:5.0f} ms)  {o_rps:9,.1f} ({o_p99:5.0f} ms)"
            f"  {ratio:6.2f}  {r_rps:9,.1f} ({r_p99:5.0f} ms)  {cold:6.2f}"
        )
        if ratio < TARGET:
            failed.append(f"{label} {ratio:.2f}")
    print(f"ratio servicemap / tipg target ≥ {TARGET} at each zoom")
    if failed:
        raise SystemExit(f"vector tile throughput ratio below {TARGET}: {', '.join(failed)}")


if __name__ == "__main__":
    main()
