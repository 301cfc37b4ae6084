"""/api/v1/nearest from other continents vs from inside the district: p99 latency ratio.

Issue 13: from the district's antipode one request took 3.6 s (the exact re-ranking widened its
fetch towards 20,000 candidates) and a dozen of them starved ordinary queries. Far points now
take their bound from H3 cells, coarse to fine (geoservice/query/nearest.py). Same
benchmark-owned database (``--rows`` scaled-sample facilities, H3 cells synced), same server
(``servicemap serve --workers 2``), wrk with 32 clients: random points in the district, then
random points among eight far ones (the antipode, Beijing, Paris, New York, São Paulo, Sydney,
Nairobi, across the antimeridian). Target: p99 far / p99 near ≤ 2; the throughput ratio is
printed too (what a far request costs the machine against a near one).
"""

from __future__ import annotations

import os

from benchmarks.bench_nearest import (
    WRK_NEAREST,
    arguments,
    scaled_database,
    serve,
    sync_h3,
    wrk,
)

TARGET = 2.0

WRK_FAR = """
math.randomseed(os.time())
local points = {{ {{-22.55, -65.88}}, {{39.9, 116.4}}, {{48.85, 2.35}}, {{40.71, -74.0}},
                 {{-23.55, -46.63}}, {{-33.87, 151.2}}, {{-1.29, 36.82}}, {{10.0, 179.99}} }}
request = function()
  local p = points[math.random(#points)]
  local lat = p[1] + (math.random() - 0.5) * 0.2
  local lon = math.max(-180, math.min(180, p[2] + (math.random() - 0.5) * 0.2))
  return wrk.format("GET", string.format("/api/v1/nearest?lat=%.6f&lon=%.6f&k=5&layer={layer}", lat, lon))
end
"""


def main() -> None:
    args = arguments(__doc__ or "")
    layer = os.environ.get("BENCH_NEAREST_LAYER", "toilet")
    with scaled_database(args.rows, "nearest_far") as url:
        sync_h3(url)  # what the first /api/v1/h3 or a CLI load's derive step does
        with serve(url) as base:
            wrk(base, WRK_NEAREST.format(layer=layer), 3)  # warm up both paths
            wrk(base, WRK_FAR.format(layer=layer), 3)
            near_rps, near_p99 = wrk(base, WRK_NEAREST.format(layer=layer), args.seconds)
            far_rps, far_p99 = wrk(base, WRK_FAR.format(layer=layer), args.seconds)
    ratio = far_p99 / near_p99
    print(f"rows: {args.rows:,}; layer: {layer}; k=5; 32 clients; 2 workers")
    print(f"near (district):        {near_rps:,.0f} req/s, p99 {near_p99:.1f} ms")
    print(f"far (other continents): {far_rps:,.0f} req/s, p99 {far_p99:.1f} ms")
    print(f"ratio p99 far / near: {ratio:.2f} (target ≤ {TARGET})")
    print(f"ratio req/s far / near: {far_rps / near_rps:.2f}")
    if ratio > TARGET:
        raise SystemExit(f"nearest far/near p99 ratio {ratio:.2f} > {TARGET}")


if __name__ == "__main__":
    main()
