"""OGC items (bbox, limit=10) throughput: servicemap vs tipg and vs pgbench, same table, same run.

Every request is a random 0.01° bbox inside the district (from empty to ~47,000 toilets), a
page of 10 in a stable order and a count. Three measurements over the same benchmark-owned
database (1,000,000 facilities by default, ``--rows``), 32 concurrent clients each:

- pgbench running the SQL of one such page: the bbox filter, the order, LIMIT 10 and an exact
  ``count(*)`` of the matches (two statements, one transaction);
- tipg (2 workers, its own venv ``.venv-tipg``, created here on first use), which counts
  exactly;
- servicemap (``servicemap serve --workers 2``), whose ``numberMatched`` is exact or absent:
  counted exactly up to ``MATCH_CAP`` and left out beyond (the share of pages that carry it
  is printed).

Targets: servicemap ≥ 2× tipg and ≥ 0.5× pgbench. ``BENCH_OGC_DATABASE_URL`` runs against an
existing database of scaled facilities instead of loading one (for iterating; not for figures).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import httpx

from benchmarks.bench_nearest import (
    CLIENTS,
    ROOT,
    arguments,
    free_port,
    pgbench,
    scaled_database,
    serve,
    stop,
    sync_h3,
    wait_ready,
    wrk,
)

TARGET_TIPG = 2.0
TARGET_PGBENCH = 0.5
TIPG_VENV = ROOT / ".venv-tipg"
LAYER = "toilet"
#: the random boxes: west/south corner ranges (the district, less the box size) and the size
WEST, SOUTH, SPAN_LON, SPAN_LAT, SIZE = 114.09, 22.52, 0.13, 0.09, 0.01

WRK_ITEMS = """
math.randomseed(os.time())
request = function()
  local lon = {west} + math.random() * {span_lon}
  local lat = {south} + math.random() * {span_lat}
  return wrk.format("GET", string.format("{path}bbox=%.5f,%.5f,%.5f,%.5f&limit=10", lon, lat, lon + {size}, lat + {size}))
end
"""

#: one page as SQL: the same filter, order and limit as /ogc items, and an exact count
PAGE_SQL = """\\set lon random({lon_min}, {lon_max})
\\set lat random({lat_min}, {lat_max})
BEGIN;
SELECT count(*) FROM facilities f
WHERE f.status <> 'removed' AND f.layer = '{layer}'
  AND ST_Intersects(f.geom, ST_MakeEnvelope(:lon / 100000.0, :lat / 100000.0, :lon / 100000.0 + {size}, :lat / 100000.0 + {size}, 4326));
SELECT * FROM (
    SELECT f.*, ST_X(f.geom) AS lon, ST_Y(f.geom) AS lat,
           f.geom <-> ST_SetSRID(ST_MakePoint(:lon / 100000.0 + {half}, :lat / 100000.0 + {half}), 4326) AS d
    FROM facilities f
    WHERE f.status <> 'removed' AND f.layer = '{layer}'
      AND ST_Intersects(f.geom, ST_MakeEnvelope(:lon / 100000.0, :lat / 100000.0, :lon / 100000.0 + {size}, :lat / 100000.0 + {size}, 4326))
    ORDER BY f.geom <-> ST_SetSRID(ST_MakePoint(:lon / 100000.0 + {half}, :lat / 100000.0 + {half}), 4326)
    FETCH FIRST 10 ROWS WITH TIES
) near ORDER BY d, id LIMIT 10;
END;
"""


def _script(path: str) -> str:
    return WRK_ITEMS.format(
        west=WEST, south=SOUTH, span_lon=SPAN_LON, span_lat=SPAN_LAT, size=SIZE, path=path
    )


def _page_sql() -> str:
    return PAGE_SQL.format(
        lon_min=round(WEST * 100000),
        lon_max=round((WEST + SPAN_LON) * 100000),
        lat_min=round(SOUTH * 100000),
        lat_max=round((SOUTH + SPAN_LAT) * 100000),
        size=SIZE,
        half=SIZE / 2,
        layer=LAYER,
    )


def tipg_python() -> Path:
    """The tipg venv's python (created and filled on first use)."""
    python = TIPG_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TIPG_VENV)], check=True)
    check = subprocess.run([str(python), "-c", "import tipg, uvicorn"], capture_output=True)
    if check.returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "tipg>=0.7", "uvicorn"], check=True
        )
    return python


@contextmanager
def serve_tipg(url: str, workers: int = 2, **settings: str) -> Iterator[str]:
    """tipg (uvicorn, N workers) over `url`, with extra TIPG_ settings; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "TIPG_DB_SCHEMAS": '["public"]',
        "TIPG_DB_TABLES": '["public.facilities"]',
        "TIPG_MAX_FEATURES_PER_QUERY": "1000",
        # pools opened in full at start-up (as ours): no connects during the measured run
        "DB_MIN_CONN_SIZE": "16",
        "DB_MAX_CONN_SIZE": "16",
        **settings,
    }
    process = subprocess.Popen(
        [str(tipg_python()), "-m", "uvicorn", "tipg.main:app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, path="/collections", timeout_s=120)
        yield base
    finally:
        stop(process)


def counted_share(base: str, path: str, samples: int = 200) -> float:
    """The share of random pages whose numberMatched is present (it is exact when present)."""
    rng = random.Random(7)
    present = 0
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(samples):
            lon, lat = WEST + rng.random() * SPAN_LON, SOUTH + rng.random() * SPAN_LAT
            bbox = f"{lon:.5f},{lat:.5f},{lon + SIZE:.5f},{lat + SIZE:.5f}"
            body = client.get(f"{path}bbox={bbox}&limit=10").json()
            present += "numberMatched" in body
    return present / samples


def main() -> None:
    args = arguments(__doc__ or "")
    tipg_python()
    ours_path = f"/ogc/collections/{LAYER}/items?"
    # tipg serves the first geometry column (footprint, mostly NULL) unless told which
    tipg_path = f"/collections/public.facilities/items?geom-column=geom&layer={LAYER}&"
    existing = os.environ.get("BENCH_OGC_DATABASE_URL")
    database = nullcontext(existing) if existing else scaled_database(args.rows, "ogc")
    with database as url:
        sync_h3(url)  # what `servicemap ingest` does after a load
        tps = pgbench(url, _page_sql(), args.seconds)
        with serve_tipg(url) as base:
            wrk(base, _script(tipg_path), 3)
            tipg_rps, tipg_p99 = wrk(base, _script(tipg_path), args.seconds)
        with serve(url) as base:
            wrk(base, _script(ours_path), 3)
            rps, p99 = wrk(base, _script(ours_path), args.seconds)
            share = counted_share(base, ours_path)
    vs_tipg = rps / tipg_rps if tipg_rps else float("inf")
    vs_pgbench = rps / tps
    rows = f"{args.rows:,}" if not existing else "existing database"
    print(f"rows: {rows}; random {SIZE}° bbox, limit=10, {LAYER}; {CLIENTS} clients; 2 workers")
    print(f"pgbench page + exact count(*): {tps:,.0f} tps")
    print(f"tipg  {tipg_path}: {tipg_rps:,.0f} req/s, p99 {tipg_p99:.1f} ms")
    print(
        f"ours  {ours_path}: {rps:,.0f} req/s, p99 {p99:.1f} ms"
        f" (numberMatched on {share:.0%} of pages, exact; absent on the rest)"
    )
    print(f"ratio servicemap / tipg:    {vs_tipg:.2f} (target ≥ {TARGET_TIPG})")
    print(f"ratio servicemap / pgbench: {vs_pgbench:.2f} (target ≥ {TARGET_PGBENCH})")
    if vs_tipg < TARGET_TIPG or vs_pgbench < TARGET_PGBENCH:
        raise SystemExit(
            f"OGC items throughput ratios {vs_tipg:.2f} (tipg), {vs_pgbench:.2f} (pgbench)"
            " below target"
        )


if __name__ == "__main__":
    main()
