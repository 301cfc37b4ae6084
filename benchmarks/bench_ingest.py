"""Ingest throughput: what the user waits for, `servicemap ingest` end to end, vs to_postgis.

For each size (200,000 and 1,000,000 facilities by default) writes `servicemap sample --scale N`
(GeoPackage), then, each measurement after a CHECKPOINT and once no autovacuum worker is busy:
1. baseline: ``GeoDataFrame.to_postgis`` (SQLAlchemy, psycopg driver) of the same rows into a
   table of its own, timed around the write alone (the file read beforehand);
2. end to end, into the same fresh database's (empty) facilities: ``servicemap ingest
   facilities.gpkg --layer-field layer --source scale`` as a subprocess, everything the user
   waits for: starting, reading, validation, COPY, index builds, H3 counts, the run record,
   facility ↔ matter linking and the statistics;
   with ``--rounds N`` both N times, each round in a fresh database, taking turns at going
   first; the medians are compared;
3. load only, in another database: the same command with ``--no-h3 --no-link`` (printed beside
   it; a first load into an empty table counts its H3 cells as it loads, so this one includes
   them too: --no-h3 only leaves queued facilities to the first /api/v1/h3 requests), then again
   on the unchanged file (must write nothing, and be no slower);
and prints the rate ratio end to end (target ≥ 0.5) with the load-only ratio beside it, the
re-ingest ratio (first / again, target ≥ 1) and the peak RSS of the ingest's processes (target
≤ 500 MB at every size; the ingest and its H3 counting process summed, sampled by a small
launcher process), then the share of the opening-hours corpus the normaliser understands.
Exits 1 if a target is missed.

    python -m benchmarks.bench_ingest [--rows N …] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from ingest.hours import corpus_share

#: the Chinese opening-hours strings with the expression each should become (ingest.hours)
HOURS_CORPUS = Path(__file__).resolve().parent.parent / "tests/fixtures/opening_hours_zh.tsv"
TARGET_RATE_RATIO = 0.5
TARGET_RSS_MB = 500
DEFAULT_ROWS = (200_000, 1_000_000)


# A small launcher runs the ingest and reports the peak of the resident memory of its whole
# process tree (the ingest and the process counting its H3 cells, summed, sampled every 50 ms
# from /proc, walking only the tree) and its largest process's peak (RUSAGE_CHILDREN, exact). Measured from this
# (large) process, a forked child's RSS would include the parent's pages.
_LAUNCHER = """
import os, resource, subprocess, sys, time

def tree_rss(root):
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as handle:
                    todo.extend(int(c) for c in handle.read().split())
            with open(f"/proc/{pid}/status") as handle:
                total += next(int(l.split()[1]) for l in handle if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total

started = time.perf_counter()
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
peak = 0
while process.poll() is None:
    peak = max(peak, tree_rss(process.pid))
    time.sleep(0.05)
out, err = process.communicate()
elapsed = time.perf_counter() - started
if process.returncode != 0:
    print(out, err, file=sys.stderr)
    raise SystemExit(process.returncode)
print(elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, peak)
"""


def _ingest(url: str, path: Path, *, derived: bool) -> tuple[float, float]:
    """(seconds, peak RSS in MB of its whole process tree) of `servicemap ingest` of the file.

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
    elapsed, largest_kb, tree_kb = done.stdout.split()
    # the sampled sum can miss a short peak of the largest process: never report less than it
    return float(elapsed), max(float(largest_kb), float(tree_kb)) / 1024


def _to_postgis(url: str, gpkg: Path) -> float:
    """Seconds `GeoDataFrame.to_postgis` takes to write the file's rows (read beforehand)."""
    import geopandas as gpd
    import pyogrio
    import sqlalchemy

    from geoservice.db.connection import sqlalchemy_url

    frame: gpd.GeoDataFrame = pyogrio.read_dataframe(gpkg, use_arrow=True)
    engine = sqlalchemy.create_engine(sqlalchemy_url(url))
    try:
        started = time.perf_counter()
        frame.to_postgis("bench_to_postgis", engine, if_exists="replace", index=False)
        return time.perf_counter() - started
    finally:
        engine.dispose()


def _quiesce(url: str, wait_s: float = 30.0) -> None:
    """A checkpoint, then wait (up to `wait_s`) until no autovacuum worker is busy."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
            ).fetchone()
            if not busy or not busy[0]:
                return
            time.sleep(0.2)


def _one_size(rows: int, rounds: int = 1) -> list[str]:
    """Run the three measurements at one size; print them; the targets missed.

    With `rounds` > 1 the baseline and the whole ingest are timed that many times, taking turns
    at going first, each round in a fresh database; the medians are compared.
    """
    from benchmarks.common import own_database
    from ingest.sample import write_scaled

    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        started = time.perf_counter()
        gpkg = write_scaled(Path(tmp), rows)["gpkg"]
        print(f"sample: {rows:,} facilities written in {time.perf_counter() - started:.1f}s")
        baselines, wholes, whole_mb = [], [], 0.0
        for number in range(rounds):
            with own_database("ingest_e2e") as url:
                # each in a quiet server, in turn first: the writes of one (a checkpoint, the
                # autovacuum of a fresh table) must not land on the other's time
                for which in ("baseline", "whole") if number % 2 == 0 else ("whole", "baseline"):
                    _quiesce(url)
                    if which == "baseline":
                        baselines.append(_to_postgis(url, gpkg))
                    else:
                        seconds, mb = _ingest(url, gpkg, derived=True)
                        wholes.append(seconds)
                        whole_mb = max(whole_mb, mb)
        baseline_s, whole_s = statistics.median(baselines), statistics.median(wholes)
        if rounds > 1:
            print(f"rounds: to_postgis {_seconds(baselines)}; whole ingest {_seconds(wholes)}")
        with own_database("ingest_load") as url:
            _quiesce(url)
            first_s, first_mb = _ingest(url, gpkg, derived=False)
            _quiesce(url)
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


def _seconds(times: list[float]) -> str:
    return ", ".join(f"{t:.1f}s" for t in times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_ingest", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, action="append", help="facilities in the sample (repeatable)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="time the baseline and the whole ingest this many times each (medians compared)",
    )
    args = parser.parse_args(argv)  # None: sys.argv (python -m benchmarks NAME --option)
    missed = [m for rows in (args.rows or DEFAULT_ROWS) for m in _one_size(rows, args.rounds)]
    understood, total, expected = corpus_share(HOURS_CORPUS)
    print(
        f"opening-hours corpus ({HOURS_CORPUS.name}): understood {understood} of {total} "
        f"({100 * understood / total:.1f} %), normalised as expected {expected} of {total}"
    )
    if missed:
        print(f"targets missed: {', '.join(missed)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
