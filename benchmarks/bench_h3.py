"""/api/v1/h3 at resolution 9 over the whole district vs fetching points and bucketing in Python.

The baseline is what a client would do without the endpoint: fetch every live facility's
coordinates in the district and count ``h3.latlng_to_cell(lat, lon, 9)`` in Python. Both run
against the same benchmark-owned database (1,000,000 facilities by default, ``--rows``), each
timed as the median of several runs after a warm-up. Target: the endpoint ≥ 10× faster.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter

import h3
import httpx
import psycopg

from benchmarks.bench_nearest import BBOX, arguments, scaled_database, serve, sync_h3

TARGET = 10.0
#: a box of about 2 km² in the district's centre (resolution 12: ~6,500 hexagons)
FINE_BBOX = (114.12, 22.54, 114.135, 22.553)
RUNS = 5


def python_buckets(
    url: str, resolution: int = 9, bbox: tuple[float, float, float, float] = BBOX
) -> dict[str, int]:
    """The baseline: fetch the points, bucket them with h3 in Python."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT ST_Y(geom), ST_X(geom) FROM facilities "
            "WHERE status <> 'removed' AND geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)",
            bbox,
        ).fetchall()
    return dict(Counter(h3.latlng_to_cell(lat, lon, resolution) for lat, lon in rows))


def median_seconds(run: object, runs: int = RUNS) -> float:
    """Median wall time of `runs` calls after one warm-up."""
    assert callable(run)
    run()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    args = arguments(__doc__ or "")
    with scaled_database(args.rows, "h3") as url:
        started = time.perf_counter()
        sync_h3(url)
        print(
            f"H3 cells of {args.rows:,} facilities computed in {time.perf_counter() - started:.0f} s"
        )
        baseline = median_seconds(lambda: python_buckets(url))
        with serve(url, workers=1) as base, httpx.Client(base_url=base, timeout=120) as client:
            params = {"resolution": 9, "bbox": ",".join(map(str, BBOX))}

            def endpoint() -> None:
                response = client.get("/api/v1/h3", params=params)
                response.raise_for_status()

            ours = median_seconds(endpoint)
            body = client.get("/api/v1/h3", params=params).json()
            # a fine resolution is bucketed from the facilities on request (no counts kept):
            # printed beside the same baseline over its bbox, no target
            fine = {"resolution": 12, "bbox": ",".join(map(str, FINE_BBOX))}

            def fine_endpoint() -> None:
                client.get("/api/v1/h3", params=fine).raise_for_status()

            fine_ours = median_seconds(fine_endpoint)
            fine_body = client.get("/api/v1/h3", params=fine).json()
        fine_base = median_seconds(lambda: python_buckets(url, 12, FINE_BBOX))
        total = sum(f["properties"]["count"] for f in body["features"])
    ratio = baseline / ours
    print(
        f"rows: {args.rows:,}; resolution 9; bbox {BBOX}; {len(body['features'])} hexagons, {total:,} facilities"
    )
    print(f"fetch points + bucket in Python: {baseline * 1000:,.0f} ms")
    print(f"/api/v1/h3 (HTTP, JSON):         {ours * 1000:,.0f} ms")
    print(f"speed-up: {ratio:.1f}× (target ≥ {TARGET:.0f}×)")
    fine_total = sum(f["properties"]["count"] for f in fine_body["features"])
    print(
        f"resolution 12 over {FINE_BBOX} ({len(fine_body['features']):,} hexagons, "
        f"{fine_total:,} facilities, bucketed on request): endpoint {fine_ours * 1000:,.0f} ms, "
        f"Python {fine_base * 1000:,.0f} ms, {fine_base / fine_ours:.1f}×"
    )
    if ratio < TARGET:
        raise SystemExit(f"h3 speed-up {ratio:.1f} < {TARGET}")


if __name__ == "__main__":
    main()
