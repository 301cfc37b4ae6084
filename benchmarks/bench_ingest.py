"""Ingest throughput: what the user waits for, `servicemap ingest` end to end, vs to_postgis.

For each size (200,000 and 1,000,000 facilities by default) writes `servicemap sample --scale N`
(GeoPackage), then:
1. baseline: ``GeoDataFrame.to_postgis`` (SQLAlchemy, psycopg driver) of the same rows into a
   fresh table, timed around the write alone;
2. end to end, in a database of its own: ``servicemap ingest facilities.gpkg --layer-field layer
   --source scale`` as a subprocess, everything the user waits for: reading, validation, COPY,
   upsert, index maintenance, the run record, H3 indexing and facility ↔ matter linking;
3. load only, in another database: the same command with ``--no-h3 --no-link`` (printed beside
   it; a first load into an empty table writes its H3 cells as it loads, so this one includes
   them too: --no-h3 only leaves queued facilities to the first /api/v1/h3 requests), then again
   on the unchanged file (must write nothing, and be no slower);
and prints the rate ratio end to end (target ≥ 0.5) with the load-only ratio beside it, the
re-ingest ratio (first / again, target ≥ 1) and the peak RSS of the ingest processes (target
≤ 500 MB at every size; measured through a small launcher process with RUSAGE_CHILDREN). Exits 1
if a target is missed.

    python -m benchmarks.bench_ingest [--rows N …]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

TARGET_RATE_RATIO = 0.5
TARGET_RSS_MB = 500
DEFAULT_ROWS = (200_000, 1_000_000)


# A small launcher runs the ingest and reports its child's peak RSS: measured from this (large)
# process, a forked child's RSS would include the parent's pages.
_LAUNCHER = """
import resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
elapsed = time.perf_counter() - started
if done.returncode != 0:
    print(done.stdout, done.stderr, file=sys.stderr)
    raise SystemExit(done.returncode)
print(elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _ingest(url: str, path: Path, *, derived: bool) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `servicemap ingest` of the scale file.

    `derived`: H3 indexing and linking included (the whole command), else the load alone.
    """
    servicemap = Path(sys.executable).with_name("servicemap")
    env = {**os.environ, "DATABASE_URL": url}
    command = [str(servicemap), "ingest", str(path), "--layer-field", "layer", "--source", "scale"]
    if not derived:
        command += ["--no-h3", "--no-link"]
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *command], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        print(done.stdout, done.stderr, sep="\n")
        raise SystemExit(f"ingest failed with exit code {done.returncode}")
    elapsed, rss_kb = done.stdout.split()
    return float(elapsed), float(rss_kb) / 1024


def _one_size(rows: int) -> list[str]:
    """Run the three measurements at one size; print them; the targets missed."""
    import geopandas as gpd
    import pyogrio
    import sqlalchemy

    from benchmarks.common import own_database
    from geoservice.db.connection import sqlalchemy_url
    from ingest.sample import write_scaled

    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        started = time.perf_counter()
        gpkg = write_scaled(Path(tmp), rows)["gpkg"]
        print(f"sample: {rows:,} facilities written in {time.perf_counter() - started:.1f}s")
        with own_database("ingest_e2e") as url:
            frame: gpd.GeoDataFrame = pyogrio.read_dataframe(gpkg, use_arrow=True)
            engine = sqlalchemy.create_engine(sqlalchemy_url(url))
            started = time.perf_counter()
            frame.to_postgis("bench_to_postgis", engine, if_exists="replace", index=False)
            baseline_s = time.perf_counter() - started
            engine.dispose()
            del frame
            whole_s, whole_mb = _ingest(url, gpkg, derived=True)
        with own_database("ingest_load") as url:
            first_s, first_mb = _ingest(url, gpkg, derived=False)
            again_s, again_mb = _ingest(url, gpkg, derived=False)
            with psycopg.connect(url) as conn:
                last = conn.execute(
                    "SELECT inserted, updated FROM ingest_runs ORDER BY id DESC LIMIT 1"
                ).fetchone()
                stored = conn.execute("SELECT count(*) FROM facilities").fetchone()
    assert last is not None and stored is not None
    peak_mb = max(whole_mb, first_mb, again_mb)
    base_rate = rows / baseline_s
    ratio, load_ratio = rows / whole_s / base_rate, rows / first_s / base_rate
    reingest_ratio = first_s / again_s
    print(f"to_postgis baseline:        {baseline_s:.1f}s ({base_rate:,.0f} rows/s)")
    print(
        f"servicemap ingest (whole):  {whole_s:.1f}s ({rows / whole_s:,.0f} rows/s), H3 and links"
    )
    print(
        f"servicemap ingest (load):   {first_s:.1f}s ({rows / first_s:,.0f} rows/s), {stored[0]:,} stored"
    )
    print(f"re-ingest unchanged:        {again_s:.1f}s (inserted {last[0]}, updated {last[1]})")
    print(
        f"ingest rate ratio at {rows:,} (whole / to_postgis): {ratio:.2f} "
        f"(target >= {TARGET_RATE_RATIO}); load only: {load_ratio:.2f}"
    )
    print(f"re-ingest ratio (first load / re-ingest): {reingest_ratio:.2f} (target >= 1.0)")
    print(
        f"peak RSS of ingest: {peak_mb:,.0f} MB (target <= {TARGET_RSS_MB} MB); whole "
        f"{whole_mb:,.0f} MB, load {first_mb:,.0f} MB, re-ingest {again_mb:,.0f} MB"
    )
    missed = []
    if ratio < TARGET_RATE_RATIO:
        missed.append(f"rate at {rows:,}")
    if reingest_ratio < 1.0 or last[0] != 0 or last[1] != 0:
        missed.append(f"re-ingest at {rows:,}")
    if peak_mb > TARGET_RSS_MB:
        missed.append(f"memory at {rows:,}")
    if stored[0] != rows:
        missed.append(f"row count at {rows:,}")
    return missed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_ingest", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, action="append", help="facilities in the sample (repeatable)"
    )
    args = parser.parse_args(argv if argv is not None else [])
    missed = [m for rows in (args.rows or DEFAULT_ROWS) for m in _one_size(rows)]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
