"""`servicemap export` to GeoPackage vs `ogr2ogr -f GPKG` reading the same table, same run.

A benchmark-owned database holds 1,000,000 facilities of one layer (``--rows``; the scaled
sample loaded with ``--layer toilet``). Both tools write that layer's live facilities to a new
GeoPackage: ours with ``servicemap export --layer toilet --out FILE.gpkg``, GDAL's with
``ogr2ogr -f GPKG FILE.gpkg PG:… facilities -where "layer = 'toilet' AND status <> 'removed'"``
(its PostgreSQL driver). Each runs twice, alternating; the faster run of each counts. Rates
are facilities per second; the peak RSS of each process (VmHWM) is reported, ours being
the bounded-memory claim. Target: our rate ≥ 0.5 × ogr2ogr's.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from benchmarks.bench_nearest import ROOT
from benchmarks.bench_tiles import options
from benchmarks.common import own_database

TARGET = 0.5
LAYER = "toilet"


@contextmanager
def one_layer_database(rows: int) -> Iterator[str]:
    """A new database holding `rows` scaled-sample facilities, all of one layer."""
    from ingest.sample import write_scaled

    with own_database("export") as url, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        files = write_scaled(Path(tmp), rows)
        subprocess.run(
            [str(ROOT / ".venv/bin/servicemap"), "ingest", str(files["gpkg"]), "--layer", LAYER,
             "--source", "scale"],
            env={**os.environ, "DATABASE_URL": url},
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        print(f"loaded {rows:,} facilities in {time.perf_counter() - started:.0f} s", flush=True)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE facilities")
        yield url


def _peak_kib(pid: int) -> int:
    """The process's peak resident set so far (VmHWM, KiB); 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of a command run to completion.

    The peak is the program's own (VmHWM, polled every 20 ms until it exits): ``wait4``'s
    ru_maxrss would also count the benchmark's pages the child held between fork and exec.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _peak_kib(process.pid))
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        assert process.stderr is not None
        raise SystemExit(f"{command[0]} failed: {process.stderr.read().decode()[-2000:]}")
    return elapsed, peak / 1024


def main() -> None:
    args = options(__doc__ or "")
    with one_layer_database(args.rows) as url, tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DATABASE_URL": url}
        ours = [str(ROOT / ".venv/bin/servicemap"), "export", "--layer", LAYER]
        where = f"layer = '{LAYER}' AND status <> 'removed'"
        results: dict[str, list[tuple[float, float]]] = {"ours": [], "ogr2ogr": []}
        for attempt in range(2):
            theirs_file = Path(tmp) / f"ogr-{attempt}.gpkg"
            ours_file = Path(tmp) / f"ours-{attempt}.gpkg"
            results["ogr2ogr"].append(
                run(
                    [
                        "ogr2ogr",
                        "-f",
                        "GPKG",
                        str(theirs_file),
                        f"PG:{url}",
                        "facilities",
                        "-where",
                        where,
                        "-nln",
                        LAYER,
                    ],
                    env,
                )  # fmt: skip
            )
            results["ours"].append(run([*ours, "--out", str(ours_file)], env))
            theirs_file.unlink()
            ours_file.unlink()
    ogr_s, ogr_rss = min(results["ogr2ogr"])
    ours_s, ours_rss = min(results["ours"])
    ratio = ogr_s / ours_s
    print(f"rows: {args.rows:,} facilities of layer {LAYER}; GeoPackage; best of 2 runs each")
    print(f"ogr2ogr -f GPKG (PG driver): {ogr_s:6.1f} s, {args.rows / ogr_s:9,.0f} /s, "
          f"peak RSS {ogr_rss:,.0f} MiB")  # fmt: skip
    print(f"servicemap export:           {ours_s:6.1f} s, {args.rows / ours_s:9,.0f} /s, "
          f"peak RSS {ours_rss:,.0f} MiB")  # fmt: skip
    print(f"ratio servicemap / ogr2ogr: {ratio:.2f} (target ≥ {TARGET})")
    if ratio < TARGET:
        raise SystemExit(f"export rate ratio {ratio:.2f} < {TARGET}")


if __name__ == "__main__":
    main()
