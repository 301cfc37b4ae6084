"""Sensor ingestion over HTTP vs COPY straight into the readings table, same rows, same run.

1. A fresh database (own name, dropped at the end) with the sample toilets and 16 devices.
2. Baseline: COPY every reading straight into ``toilet_readings`` (rows/s; the median of three
   runs, the table emptied after each).
3. ``servicemap serve`` (a subprocess) takes as many readings as batches of 100 from 16
   concurrent devices over HTTP; acknowledged readings/s, the median of three runs (each on
   new connections, which the kernel spreads over the workers anew). Target: ≥ 0.3 × the COPY
   rate. In each run every device first posts one untimed warm-up batch (its connection is
   then open and the server's token cache filled, as in steady operation).
4. Single-reading POSTs from 16 concurrent devices: requests/s and p99 latency.
After each run the stored rows are counted: stored must equal acknowledged, exactly.

    python -m benchmarks.bench_sensors [--readings N] [--single N] [--workers W] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from psycopg import sql

from benchmarks.bench_nearest import free_port, stop, wait_ready
from benchmarks.common import own_database
from geoservice.db.connection import connect
from geoservice.settings import PROJECT_ROOT
from geoservice.toilets.admin import add_device
from geoservice.toilets.simulator import ToiletSim
from geoservice.toilets.writer import READING_COLUMNS, reading_row

TARGET_RATIO = 0.3
#: runs of each side (COPY and HTTP); the median counts
RUNS = 3
DEVICES = 16
BATCH = 100


class RawClient:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost little CPU."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, token: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


def make_readings(n: int, seed: int) -> list[dict[str, Any]]:
    """n realistic readings one second apart, ending a minute ago."""
    rng = random.Random(seed)
    sim = ToiletSim([str(i) for i in range(1, 5)], rng)
    start = datetime.now(UTC) - timedelta(seconds=n + 60)
    return [sim.step(start + timedelta(seconds=i)) for i in range(n)]


def copy_seconds(
    url: str, devices: list[tuple[int, str, str]], readings: dict[int, list[dict[str, Any]]]
) -> float:
    """Seconds to COPY every reading straight into toilet_readings (emptied afterwards)."""
    with connect(url) as conn:
        started = time.perf_counter()
        with conn.cursor().copy(
            sql.SQL("COPY toilet_readings ({}) FROM STDIN").format(
                sql.SQL(", ").join(map(sql.Identifier, READING_COLUMNS))
            )
        ) as copy:
            for device_id, _, facility in devices:
                for r in readings[device_id]:
                    copy.write_row(reading_row(device_id, facility, r))
        conn.commit()
        seconds = time.perf_counter() - started
    total = sum(len(readings[d]) for d, _, _ in devices)
    copied, _ = stored(url, [d for d, _, _ in devices])
    assert copied == total, f"COPY stored {copied} of {total}"
    with connect(url) as conn:
        conn.execute("TRUNCATE toilet_readings")
        conn.commit()
    return seconds


def stored(url: str, devices: list[int]) -> tuple[int, int]:
    """(rows stored, distinct (device, seq) pairs among them) for these devices."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) AS n, count(DISTINCT (device_id, seq)) AS keys"
            " FROM toilet_readings WHERE device_id = ANY(%s)",
            (devices,),
        ).fetchone()
    assert row is not None
    return int(row["n"]), int(row["keys"])


def start_server(url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SERVICEMAP_LOG_LEVEL": "warning",
        # the benchmark measures ingestion, not the per-device limiter
        "SERVICEMAP_TOILETS_DEVICE_RATE_PER_S": "1000000",
        "SERVICEMAP_TOILETS_DEVICE_BURST": "1000000",
        "SERVICEMAP_DB_POOL_MAX": "20",
    }
    exe = Path(sys.executable).parent / "servicemap"
    log = open(Path(tempfile.gettempdir()) / f"bench_sensors_{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=log,
        cwd=PROJECT_ROOT,
    )
    print(f"servicemap serve --workers {workers} on port {port} (log: {log.name})")
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
    except SystemExit:
        stop(process)
        raise
    return process


async def post_all(
    port: int, jobs: list[tuple[str, list[bytes]]], warm_up: bool = False
) -> tuple[int, int, list[float], float, int]:
    """Each job (token, bodies) posts its bodies in order on its own connection, all jobs
    concurrently. With warm_up, every job's first body is posted first, untimed, on the same
    connection. Returns (acknowledged readings, failed requests, latencies, seconds) of the
    timed posts and the readings the warm-up acknowledged."""
    acknowledged = failed = 0
    latencies: list[float] = []

    async def device(client: RawClient, token: str, bodies: list[bytes]) -> None:
        nonlocal acknowledged, failed
        for body in bodies:
            t0 = time.perf_counter()
            status, answer = await client.post("/api/v1/sensors/readings", body, token)
            latencies.append(time.perf_counter() - t0)
            if status == 200:
                acknowledged += int(orjson.loads(answer)["accepted"])
            else:
                failed += 1

    clients = [RawClient("127.0.0.1", port) for _ in jobs]
    try:
        warmed = 0
        if warm_up:
            await asyncio.gather(
                *(
                    device(c, token, bodies[:1])
                    for c, (token, bodies) in zip(clients, jobs, strict=True)
                )
            )
            if failed:
                raise SystemExit(f"{failed} warm-up posts failed")
            warmed, latencies = acknowledged, []
            acknowledged = 0
            jobs = [(token, bodies[1:]) for token, bodies in jobs]
        started = time.perf_counter()
        await asyncio.gather(
            *(device(c, token, bodies) for c, (token, bodies) in zip(clients, jobs, strict=True))
        )
        return acknowledged, failed, latencies, time.perf_counter() - started, warmed
    finally:
        for client in clients:
            await client.close()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=160_000, help="batched readings in all")
    parser.add_argument("--single", type=int, default=4_000, help="single-reading POSTs in all")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--quick", action="store_true", help="a small run (32,000 readings)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.readings, args.single = 32_000, 1_600
    per_device = max(BATCH, args.readings // DEVICES // BATCH * BATCH)
    singles_per_device = max(1, args.single // DEVICES)

    process: subprocess.Popen[bytes] | None = None
    with own_database("sensors") as url:
        from ingest.pipeline import ingest_file
        from ingest.sample import write_sample

        with tempfile.TemporaryDirectory() as tmp, connect(url) as conn:
            files = write_sample(Path(tmp))
            ingest_file(conn, files.layer_files["toilet"], layer="toilet", source="sample")
            conn.commit()
        with connect(url, autocommit=True) as conn:
            toilets = [
                r["id"]
                for r in conn.execute(
                    "SELECT id FROM facilities WHERE layer = 'toilet' ORDER BY id LIMIT %s",
                    (2 * DEVICES,),
                ).fetchall()
            ]
            batch_devices = [(*add_device(conn, t, 4), t) for t in toilets[:DEVICES]]
            single_devices = [(*add_device(conn, t, 4), t) for t in toilets[DEVICES:]]

        per_run = BATCH + per_device
        print(
            f"generating {RUNS} × {per_run * DEVICES:,} readings for {DEVICES} devices", flush=True
        )
        # per run, each device's first batch is its warm-up, the rest are timed
        generated = {d: make_readings(RUNS * per_run, seed=d) for d, _, _ in batch_devices}
        readings = {d: rs[BATCH:per_run] for d, rs in generated.items()}

        # --- baseline: COPY the same rows straight into the readings table, median of three -
        total = per_device * DEVICES
        copy_runs = sorted(copy_seconds(url, batch_devices, readings) for _ in range(RUNS))
        copy_s = copy_runs[RUNS // 2]
        copy_rate = total / copy_s
        print(
            f"COPY into toilet_readings: {total:,} rows in {copy_s:.2f}s = {copy_rate:,.0f} rows/s"
            f" (median of {', '.join(f'{t:.2f}' for t in copy_runs)} s)"
        )

        try:
            # --- HTTP: batches of 100 from 16 concurrent devices ----------------------------------
            port = free_port()
            process = start_server(url, port, args.workers)
            rates: list[float] = []
            acked_all = 0
            for run in range(RUNS):
                # fresh connections each run: the kernel spreads them over the workers anew
                jobs = [
                    (
                        token,
                        [
                            orjson.dumps({"readings": generated[device_id][i : i + BATCH]})
                            for i in range(run * per_run, (run + 1) * per_run, BATCH)
                        ],
                    )
                    for device_id, token, _ in batch_devices
                ]
                acked, failed, latencies, http_s, warm_acked = asyncio.run(
                    post_all(port, jobs, warm_up=True)
                )
                rates.append(acked / http_s)
                acked_all += acked + warm_acked
                rows, keys = stored(url, [d for d, _, _ in batch_devices])
                print(
                    f"HTTP run {run + 1}: batches of {BATCH}, {DEVICES} devices, "
                    f"{args.workers} worker(s): {acked:,} acknowledged in {http_s:.2f}s = "
                    f"{rates[-1]:,.0f} readings/s (p99 {p99(latencies) * 1000:.1f} ms per batch, "
                    f"{failed} failed requests); stored so far {rows:,} readings, {keys:,} "
                    f"distinct (device, seq), acknowledged {acked_all:,} with the warm-ups"
                )
                assert rows == acked_all == keys, (
                    f"stored {rows} readings / {keys} keys, acknowledged {acked_all}"
                )
            http_rate = sorted(rates)[RUNS // 2]

            # replaying everything must store nothing more
            replay_acked, *_ = asyncio.run(post_all(port, [(t, b[:5]) for t, b in jobs]))
            assert replay_acked == 0 and stored(url, [d for d, _, _ in batch_devices])[0] == rows

            # --- single-reading POSTs -------------------------------------------------------------
            single_jobs = [
                (token, [orjson.dumps(r) for r in make_readings(singles_per_device, seed=1000 + d)])
                for d, token, _ in single_devices
            ]
            s_acked, s_failed, s_lat, s_time, _ = asyncio.run(post_all(port, single_jobs))
            s_rows, s_keys = stored(url, [d for d, _, _ in single_devices])
            print(
                f"single-reading POSTs, {DEVICES} devices: {s_acked:,} in {s_time:.2f}s = "
                f"{len(s_lat) / s_time:,.0f} requests/s, p99 {p99(s_lat) * 1000:.1f} ms "
                f"({s_failed} failed)"
            )
            print(f"stored after single run: {s_rows:,} readings (acknowledged {s_acked:,})")
            assert s_rows == s_acked == s_keys, f"stored {s_rows}, acknowledged {s_acked}"

            ratio = http_rate / copy_rate
            verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
            print(
                f"ratio HTTP/COPY = {http_rate:,.0f} / {copy_rate:,.0f} = {ratio:.2f} "
                f"(medians of {RUNS} runs each; runs: "
                f"{', '.join(f'{r / copy_rate:.2f}' for r in rates)}) "
                f"(target ≥ {TARGET_RATIO}) {verdict}"
            )
            if ratio < TARGET_RATIO:
                raise SystemExit(1)
        finally:
            if process is not None:
                stop(process)


if __name__ == "__main__":
    main()
