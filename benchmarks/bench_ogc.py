"""OGC items (bbox, limit=10) throughput: servicemap vs tipg on the same table, same run.

Both servers run 2 workers over the same benchmark-owned database (1,000,000 facilities by
default, ``--rows``) and are loaded by ``wrk`` with 32 connections, each request a random
~1 km bbox inside the district. tipg pins its own FastAPI/starlette, so it lives in its own
throw-away venv (``.venv-tipg``, created here on first use). Target: ratio ≥ 1.5.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.bench_nearest import (
    ROOT,
    arguments,
    free_port,
    scaled_database,
    serve,
    stop,
    wait_ready,
    wrk,
)

TARGET = 1.5
TIPG_VENV = ROOT / ".venv-tipg"

WRK_ITEMS = """
math.randomseed(os.time())
request = function()
  local lon = 114.09 + math.random() * 0.13
  local lat = 22.52 + math.random() * 0.09
  return wrk.format("GET", string.format("{path}bbox=%.5f,%.5f,%.5f,%.5f&limit=10", lon, lat, lon + 0.01, lat + 0.01))
end
"""


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
def serve_tipg(url: str, workers: int = 2) -> Iterator[str]:
    """tipg (uvicorn, N workers) over `url`; yields its base URL."""
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


def main() -> None:
    args = arguments(__doc__ or "")
    tipg_python()
    layer = "toilet"
    ours_path = f"/ogc/collections/{layer}/items?"
    # tipg serves the first geometry column (footprint, mostly NULL) unless told which
    tipg_path = "/collections/public.facilities/items?geom-column=geom&"
    with scaled_database(args.rows, "ogc") as url:
        with serve_tipg(url) as base:
            wrk(base, WRK_ITEMS.format(path=tipg_path), 3)
            tipg_rps, tipg_p99 = wrk(base, WRK_ITEMS.format(path=tipg_path), args.seconds)
        with serve(url) as base:
            wrk(base, WRK_ITEMS.format(path=ours_path), 3)
            rps, p99 = wrk(base, WRK_ITEMS.format(path=ours_path), args.seconds)
    ratio = rps / tipg_rps if tipg_rps else float("inf")
    print(f"rows: {args.rows:,}; random 0.01° bbox, limit=10; 32 connections; 2 workers each")
    print(f"tipg  {tipg_path}: {tipg_rps:,.0f} req/s, p99 {tipg_p99:.1f} ms")
    print(f"ours  {ours_path}: {rps:,.0f} req/s, p99 {p99:.1f} ms")
    print(f"ratio servicemap / tipg: {ratio:.2f} (target ≥ {TARGET})")
    if ratio < TARGET:
        raise SystemExit(f"OGC items throughput ratio {ratio:.2f} < {TARGET}")


if __name__ == "__main__":
    main()
