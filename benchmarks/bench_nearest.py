"""/api/v1/nearest (k=5, one layer) throughput vs pgbench running the raw KNN SQL.

Both against the same benchmark-owned database of 1,000,000 facilities (``--rows``), 32
concurrent clients each; the API served by ``servicemap serve --workers 2`` and loaded by
``wrk`` with a Lua script drawing a new random point per request. Target: ratio ≥ 0.25.

The baseline is the raw SQL of a geodesic KNN: ordered by geography ``<->`` (distance on the
sphere) on a geography GiST index, which the benchmark builds for it (the service orders by
the geometry index since migration 0013 and has none). The planar KNN (geometry ``<->``, in
degrees: not a geodesic order) is run beside it and its ratio printed, without a target.
The helpers here (database set-up, server, wrk) are shared by bench_ogc and bench_h3."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parent.parent
BBOX = (114.09, 22.52, 114.23, 22.62)
CLIENTS = 32
TARGET = 0.25

KNN_SQL = """\\set lon random(1140900, 1142300)
\\set lat random(225200, 226200)
SELECT id, ST_Distance(geom::geography, ST_SetSRID(ST_MakePoint(:lon / 10000.0, :lat / 10000.0), 4326)::geography, true) AS d
FROM facilities WHERE layer = '{layer}' AND status <> 'removed'
ORDER BY geom::geography <-> ST_SetSRID(ST_MakePoint(:lon / 10000.0, :lat / 10000.0), 4326)::geography
LIMIT 5;
"""
#: the geodesic KNN's index, built for the baseline only
KNN_INDEX = "CREATE INDEX IF NOT EXISTS bench_geog_idx ON facilities USING gist ((geom::geography))"
#: the same in the lon/lat plane, on the index the service has (printed, no target)
PLANAR_KNN_SQL = KNN_SQL.replace("::geography\nLIMIT", "\nLIMIT").replace(
    "ORDER BY geom::geography <->", "ORDER BY geom <->"
)


WRK_NEAREST = """
math.randomseed(os.time())
request = function()
  local lon = 114.09 + math.random() * 0.14
  local lat = 22.52 + math.random() * 0.10
  return wrk.format("GET", string.format("/api/v1/nearest?lat=%.6f&lon=%.6f&k=5&layer={layer}", lat, lon))
end
"""


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def scaled_database(rows: int, tag: str) -> Iterator[str]:
    """A new database holding `rows` scaled-sample facilities (dropped afterwards)."""
    from benchmarks.common import own_database

    with own_database(tag) as url:
        started = time.perf_counter()
        load_scaled(url, rows)
        print(f"loaded {rows:,} facilities in {time.perf_counter() - started:.0f} s", flush=True)
        yield url


def load_scaled(url: str, rows: int) -> None:
    """`rows` scaled-sample facilities loaded into `url` with `servicemap ingest`, analysed."""
    from ingest.sample import write_scaled

    with tempfile.TemporaryDirectory() as tmp:
        files = write_scaled(Path(tmp), rows)
        subprocess.run(
            [str(ROOT / ".venv/bin/servicemap"), "ingest", str(files["gpkg"]),
             "--layer-field", "layer", "--source", "scale"],
            env={**os.environ, "DATABASE_URL": url},
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def sync_h3(url: str) -> None:
    """Compute every queued facility's H3 cells (what the first /api/v1/h3 would start)."""
    from geoservice.query.h3sync import sync_cells

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(
            url, row_factory=dict_row, autocommit=True
        ) as conn:
            while await sync_cells(conn):
                pass

    asyncio.run(run())


@contextmanager
def serve(url: str, workers: int = 2, env: dict[str, str] | None = None) -> Iterator[str]:
    """``servicemap serve --workers N`` over `url` (plus `env`); yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [str(ROOT / ".venv/bin/servicemap"), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        env={**os.environ, "DATABASE_URL": url, "SERVICEMAP_LOG_LEVEL": "warning",
             "SERVICEMAP_DB_POOL_MIN": "16", "SERVICEMAP_DB_POOL_MAX": "16", **(env or {})},
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        yield base
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a server, killing it if it does not exit within 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_ready(
    base: str, process: subprocess.Popen[bytes], path: str = "/readyz", timeout_s: float = 60
) -> None:
    """Block until `path` answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server at {base} exited with {process.returncode}")
        try:
            if httpx.get(f"{base}{path}", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server at {base} did not become ready")


def wrk(base: str, script: str, seconds: int, clients: int = CLIENTS) -> tuple[float, float]:
    """(requests/s, p99 ms) of wrk with a Lua script; non-2xx answers fail the run."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
        lua.write(
            "\nlocal bad = 0\nresponse = function(status) if status ~= 200 then bad = bad + 1 end end\n"
        )
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", lua.name, base],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(lua.name)
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def pgbench(url: str, script: str, seconds: int, clients: int = CLIENTS) -> float:
    """Transactions per second of pgbench running a custom script."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(seconds),
             "-f", f.name, url],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(f.name)
    match = re.search(r"tps = ([\d.]+)", out)
    assert match is not None, out
    return float(match.group(1))


def arguments(description: str) -> argparse.Namespace:
    """--rows / --seconds / --quick, from the command line however the benchmark is run.

    ``python -m benchmarks nearest --rows 10000`` runs this module imported, not as
    ``__main__``: the options are read from ``sys.argv`` either way; what they do not know
    (the benchmark names, other benchmarks' options) is left alone.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 8 s runs")
    args, _ = parser.parse_known_args(sys.argv[1:])
    if args.quick:
        args.rows, args.seconds = 100_000, 8
    return args


def main() -> None:
    args = arguments(__doc__ or "")
    layer = os.environ.get("BENCH_NEAREST_LAYER", "toilet")
    with scaled_database(args.rows, "nearest") as url:
        planar_tps = pgbench(url, PLANAR_KNN_SQL.format(layer=layer), args.seconds)
        with serve(url) as base:
            wrk(base, WRK_NEAREST.format(layer=layer), 3)  # warm up: pools, prepared statements
            rps, p99 = wrk(base, WRK_NEAREST.format(layer=layer), args.seconds)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(KNN_INDEX)
            conn.execute("ANALYZE facilities")
        tps = pgbench(url, KNN_SQL.format(layer=layer), args.seconds)
    ratio = rps / tps
    print(f"rows: {args.rows:,}; layer: {layer}; k=5; {CLIENTS} clients; 2 workers")
    print(f"pgbench raw geodesic KNN SQL (geography <->, its index): {tps:,.0f} tps")
    print(f"pgbench raw planar KNN SQL (geometry <->, no target):   {planar_tps:,.0f} tps")
    print(f"/api/v1/nearest:     {rps:,.0f} req/s, p99 {p99:.1f} ms")
    print(f"ratio API / planar KNN: {rps / planar_tps:.2f} (no target)")
    print(f"ratio API / pgbench geodesic KNN: {ratio:.2f} (target ≥ {TARGET})")
    if ratio < TARGET:
        raise SystemExit(f"nearest throughput ratio {ratio:.2f} < {TARGET}")


if __name__ == "__main__":
    main()
