"""Reads through the replica router vs straight on the standby, and the standby's lag under writes.

1. A primary cluster of the benchmark's own (never the shared one) holding ``--rows``
   scaled-sample facilities, and a streaming standby of it made as ``servicemap db replica
   add`` makes one (pg_basebackup -R).
2. Two ``servicemap serve --workers 2``: R with the primary as ``DATABASE_URL`` and the
   standby in ``SERVICEMAP_DATABASE_READ_URLS`` (every read goes through the router), S with
   the standby itself as ``DATABASE_URL``. wrk drives ``/api/v1/nearest`` (bench_nearest's
   script, 32 connections) at R and S back to back, five pairs in alternating order; the
   median of the pairs' ratios counts. Target: R ≥ 0.9 × S. The standby's and the primary's transaction counters show where
   R's reads went.
3. bench_sensors' load (batches of 100 readings from 16 devices) posted to the primary
   while the primary's ``pg_stat_replication`` is sampled every 0.1 s: the standby's replay
   lag (time and bytes) under that write load, and the readings/s it ran at.

    python -m benchmarks.bench_replicas [--rows N] [--seconds S] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import psycopg

from benchmarks.bench_nearest import WRK_NEAREST, free_port, load_scaled, serve, stop, wrk
from benchmarks.bench_sensors import BATCH, DEVICES, make_readings, post_all, start_server
from geoservice.db.cluster import Cluster
from geoservice.db.connection import check_database, connect
from geoservice.db.migrate import upgrade
from geoservice.db.standbys import Standbys
from geoservice.settings import DatabaseSettings
from geoservice.toilets.admin import add_device

TARGET = 0.9
RUNS = 5
LAYER = "toilet"
#: readings each device posts while the lag is sampled
SENSOR_READINGS = 200_000


@contextmanager
def primary_and_standby(rows: int) -> Iterator[tuple[str, str]]:
    """(primary URL, standby URL) of a cluster of our own holding `rows` facilities."""
    root = Path(tempfile.mkdtemp(prefix="bench_replicas_"))
    primary = Cluster(DatabaseSettings(data_dir=root / "pg", port=free_port(), name="bench"))
    try:
        url = primary.up()
        check_database(url)
        upgrade(url)
        started = time.perf_counter()
        load_scaled(url, rows)
        print(f"loaded {rows:,} facilities in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        standby = Standbys(primary).add()
        standby_url = standby.url
        print(f"standby by pg_basebackup -R in {time.perf_counter() - started:.0f} s", flush=True)
        yield url, standby_url
    finally:
        Standbys(primary).stop_all()
        primary.down()
        shutil.rmtree(primary.root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def transactions(url: str) -> int:
    """Committed transactions of the database at `url` so far (pg_stat_database)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def routing(primary: str, standby: str, seconds: int) -> float:
    """Median over pairs of runs of (req/s through the router) / (req/s on the standby)."""
    script = WRK_NEAREST.format(layer=LAYER)
    router_env = {"SERVICEMAP_DATABASE_READ_URLS": standby}
    with serve(primary, env=router_env) as routed, serve(standby) as direct:
        for base in (routed, direct):
            wrk(base, script, 3)  # warm up: pools, prepared statements, caches
        sides = {"router → standby": routed, "standby as DATABASE_URL": direct}
        rates: dict[str, list[float]] = {name: [] for name in sides}
        standby_tx = primary_tx = 0
        for run in range(RUNS):
            # each pair runs back to back, in alternating order: drift in the machine's
            # load (other processes) falls on both sides alike
            order = list(sides) if run % 2 == 0 else list(sides)[::-1]
            line = []
            for name in order:
                before = transactions(standby), transactions(primary)
                rps, p99 = wrk(sides[name], script, seconds)
                if sides[name] == routed:
                    time.sleep(1.5)  # pending statistics flushed
                    standby_tx += transactions(standby) - before[0]
                    primary_tx += transactions(primary) - before[1]
                rates[name].append(rps)
                line.append(f"{name} {rps:,.0f} req/s (p99 {p99:.1f} ms)")
            print(f"run {run + 1}: " + "; ".join(line), flush=True)
    routed_rps, direct_rps = rates["router → standby"], rates["standby as DATABASE_URL"]
    served = sum(routed_rps) * seconds
    print(
        f"during the router's runs (~{served:,.0f} requests): {standby_tx:,} transactions on "
        f"the standby, {primary_tx:,} on the primary (its health checks)"
    )
    ratio = statistics.median(r / d for r, d in zip(routed_rps, direct_rps, strict=True))
    print(
        f"/api/v1/nearest through the router to the standby: median {statistics.median(routed_rps):,.0f}"
        f" req/s; the standby as DATABASE_URL: median {statistics.median(direct_rps):,.0f} req/s; "
        f"ratio (median of {RUNS} back-to-back pairs) {ratio:.2f} (target ≥ {TARGET})"
    )
    return ratio


def lag_under_sensor_load(primary: str, workers: int = 2) -> None:
    """The standby's replay lag while bench_sensors' batches are posted to the primary."""
    with connect(primary, autocommit=True) as conn:
        toilets = [
            r["id"]
            for r in conn.execute(
                "SELECT id FROM facilities WHERE layer = 'toilet' ORDER BY id LIMIT %s", (DEVICES,)
            ).fetchall()
        ]
        devices = [(*add_device(conn, t, 4), t) for t in toilets]
    per_device = max(BATCH, SENSOR_READINGS // DEVICES // BATCH * BATCH)
    jobs = [
        (
            token,
            [
                orjson.dumps({"readings": readings[i : i + BATCH]})
                for i in range(0, len(readings), BATCH)
            ],
        )
        for device_id, token, _ in devices
        for readings in [make_readings(per_device, seed=device_id)]
    ]
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        with psycopg.connect(primary, autocommit=True) as conn:
            while not done.is_set():
                row = conn.execute(
                    "SELECT coalesce(extract(epoch FROM replay_lag), 0)::float8,"
                    " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint"
                    " FROM pg_stat_replication"
                ).fetchone()
                if row is not None:
                    samples.append((float(row[0]), int(row[1])))
                time.sleep(0.1)

    port = free_port()
    process = start_server(primary, port, workers)
    sampler = threading.Thread(target=sample, daemon=True)
    try:
        sampler.start()
        acked, failed, _, seconds, _ = asyncio.run(post_all(port, jobs))
    finally:
        done.set()
        sampler.join()
        stop(process)
    lags = sorted(s for s, _ in samples)
    behind = sorted(b for _, b in samples)
    print(
        f"sensor load on the primary: {acked:,} readings in {seconds:.1f} s = "
        f"{acked / seconds:,.0f} readings/s ({failed} failed posts); the standby's replay lag "
        f"over {len(samples)} samples: median {statistics.median(lags) * 1000:.0f} ms, "
        f"p99 {lags[int(len(lags) * 0.99)] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms; "
        f"behind by median {statistics.median(behind) / 1024:,.0f} kB, max {behind[-1] / 1024:,.0f} kB"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="facilities")
    parser.add_argument("--seconds", type=int, default=15, help="length of each wrk run")
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 6 s runs")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.rows, args.seconds = 100_000, 6
    with primary_and_standby(args.rows) as (primary, standby):
        print(f"rows: {args.rows:,}; layer: {LAYER}; k=5; 32 clients; 2 workers each", flush=True)
        ratio = routing(primary, standby, args.seconds)
        lag_under_sensor_load(primary)
    if ratio < TARGET:
        raise SystemExit(f"routing ratio {ratio:.2f} < {TARGET}")


if __name__ == "__main__":
    main()
