"""Vector tiles at z14-z16 throughput: servicemap vs tipg's tile endpoint on the same table.

Both servers run 2 workers over the same benchmark-owned database (1,000,000 facilities by
default, ``--rows``) and are loaded by ``wrk`` with 32 connections, each request a random tile
at zoom 14, 15 or 16 inside the district, one layer (toilets). tipg gets the same work as ours:
the same layer (``layer=toilet``), the same properties (its ``opening_hours`` text where ours
computes ``open_now``), the same 64-unit buffer and no feature cap (its default cuts a tile at
10,000 features). tipg lives in its own venv (``.venv-tipg``, see bench_ogc). Target: ≥ 1.5.
"""

from __future__ import annotations

import argparse
import sys

from benchmarks.bench_nearest import scaled_database, serve
from benchmarks.bench_nearest import wrk as run_wrk
from benchmarks.bench_ogc import serve_tipg, tipg_python

TARGET = 1.5
LAYER = "toilet"

#: a random tile at zoom 14-16 over the district; {path} gets z, x (column), y (row)
WRK_TILES = """
math.randomseed(os.time())
request = function()
  local z = 14 + math.random(0, 2)
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


def main() -> None:
    args = options(__doc__ or "")
    tipg_python()
    ours, theirs = WRK_TILES.format(path=OURS), WRK_TILES.format(path=TIPG)
    with scaled_database(args.rows, "tiles") as url:
        # tiles as ours: 64-unit buffer, no feature cap
        with serve_tipg(url, TIPG_MAX_FEATURES_PER_TILE="10000000", TIPG_TILE_BUFFER="64") as base:
            run_wrk(base, theirs, 3)
            tipg_rps, tipg_p99 = run_wrk(base, theirs, args.seconds)
        with serve(url) as base:
            run_wrk(base, ours, 3)
            rps, p99 = run_wrk(base, ours, args.seconds)
    ratio = rps / tipg_rps if tipg_rps else float("inf")
    print(f"rows: {args.rows:,}; random {LAYER} tiles at z14-16; 32 connections; 2 workers each")
    print(
        f"tipg  /collections/public.facilities/tiles/…: {tipg_rps:,.1f} tiles/s, p99 {tipg_p99:.0f} ms"
    )
    print(f"ours  /ogc/collections/{LAYER}/tiles/…:      {rps:,.1f} tiles/s, p99 {p99:.0f} ms")
    print(f"ratio servicemap / tipg: {ratio:.2f} (target ≥ {TARGET})")
    if ratio < TARGET:
        raise SystemExit(f"vector tile throughput ratio {ratio:.2f} < {TARGET}")


if __name__ == "__main__":
    main()
