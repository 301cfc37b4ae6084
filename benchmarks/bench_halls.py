"""Bookings over HTTP vs pgbench inserting booking rows with the same constraint, same run.

1. A fresh database (own name, dropped at the end) with the sample's halls and catalogue; one
   hall open 24/7 with 15-minute slots and 1,000 places per slot (the most a set-up allows).
2. Baseline: pgbench (32 clients, the service's 2 × 16 pooled connections) runs the booking
   statement itself — the slot upsert ``… ON CONFLICT DO UPDATE SET booked = booked + 1 WHERE
   booked < capacity`` with the case row and its event — on 20 slots of another matter, before
   and after the HTTP run (the mean of both: a busy machine drifts).
3. ``servicemap serve --workers 2``; ``wrk`` with 200 connections POSTs /api/v1/appointments
   over the hall's 20 slots (each request a new phone number). Bookings/s are the 201s stored
   in the timed run over its length; p99 of all requests. Target: ≥ 0.3 × the pgbench rate.
4. The slots are then filled to the last place by more requests, and zero overbooking is
   asserted: every slot holds exactly its capacity, and the cases booked are exactly as many.

    python -m benchmarks.bench_halls [--seconds N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from benchmarks.bench_nearest import free_port, pgbench, stop, wait_ready
from benchmarks.common import own_database
from geoservice.cli import disclosures as cli_disclosures
from geoservice.db.connection import connect
from geoservice.halls.domain import slot_grid
from geoservice.halls.setup import HallsFile, load_halls
from geoservice.settings import PROJECT_ROOT
from ingest.load import facility_id
from ingest.pipeline import ingest_file
from ingest.sample import write_sample

CLIENTS = 200
DB_CLIENTS = 32
SLOTS = 20
CAPACITY = 1000
TARGET = 0.3
ZONE = "Asia/Shanghai"
HALL = facility_id("sample", "LH-SERVICE_HALL-00002")
MATTER = "M-HHR-002"
PGBENCH_MATTER = "M-SIN-001"

# the service's booking statement (geoservice.halls.booking._BOOK) with pgbench's variables
PGBENCH_BOOK = """\\set s random(0, {last})
WITH slot AS (
    INSERT INTO hall_slots AS s (hall_id, matter_id, starts_at, ends_at, capacity, booked)
    VALUES ('{hall}', '{matter}', '{first}'::timestamptz + :s * interval '15 minutes',
            '{first}'::timestamptz + (:s + 1) * interval '15 minutes', 1000000000, 1)
    ON CONFLICT (hall_id, matter_id, starts_at)
    DO UPDATE SET booked = s.booked + 1 WHERE s.booked < s.capacity
    RETURNING s.id, s.starts_at, s.ends_at
), c AS (
    INSERT INTO hall_cases (code, hall_id, matter_id, kind, slot_id, starts_at, ends_at, day,
                            name, phone, status, client_hash)
    SELECT 'PGB' || nextval('bench_halls_seq'), '{hall}', '{matter}', 'appointment', slot.id,
           slot.starts_at, slot.ends_at, '{day}', '居民',
           '1' || lpad(currval('bench_halls_seq')::text, 10, '0'), 'booked', 'pgbench'
      FROM slot
    RETURNING id
)
INSERT INTO hall_case_events (case_id, status) SELECT id, 'booked' FROM c;
"""

WRK_BOOK = """
local starts = {{{starts}}}
local n = 0
local threads = 0
id = 0  -- a global: setup() gives each thread its own
setup = function(thread)
  thread:set("id", threads)
  threads = threads + 1
end
request = function()
  n = n + 1
  local body = string.format(
    '{{"hall":"{hall}","matter":"{matter}","start":"%s","name":"居民","phone":"1%d%d%08d"}}',
    starts[(n % #starts) + 1], 3 + id, {round}, n)
  return wrk.format("POST", "/api/v1/appointments", {{["Content-Type"] = "application/json"}}, body)
end
"""


def arguments() -> argparse.Namespace:
    """--seconds / --quick."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="6 s runs")
    args, _ = parser.parse_known_args(sys.argv[1:])  # also under python -m benchmarks halls
    if args.quick:
        args.seconds = 6
    return args


def prepare(url: str) -> list[datetime]:
    """The sample's halls and catalogue; HALL open 24/7; the 20 slots booked over HTTP."""
    with tempfile.TemporaryDirectory() as tmp:
        files = write_sample(Path(tmp))
        with connect(url) as conn:
            ingest_file(conn, files.layer_files["service_hall"], layer="service_hall",
                        source="sample")  # fmt: skip
            for step in cli_disclosures.DEMO_STEPS:
                step(conn, files.disclosures)
            windows = [{"id": str(i), "name": f"{i}号窗口", "matters": [MATTER, PGBENCH_MATTER]}
                       for i in range(1, 9)]  # fmt: skip
            setup = {"halls": [{"facility": HALL, "hours": "24/7", "slot_minutes": 15,
                                "booking_days_ahead": 7, "capacity": CAPACITY,
                                "windows": windows}]}  # fmt: skip
            load_halls(conn, HallsFile.model_validate(setup))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE bench_halls_seq")
        conn.execute("VACUUM ANALYZE")
    day = datetime.now(ZoneInfo(ZONE)).date() + timedelta(days=2)
    return [s.start for s in slot_grid("24/7", 15, day, ZONE)[40 : 40 + SLOTS]]


def wrk(base: str, script: str, seconds: int) -> tuple[float, float, str]:
    """(requests/s, p99 ms, wrk's report) of wrk POSTing with 200 connections."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{CLIENTS}", f"-d{seconds}s", "--timeout", "30s", "--latency",
             "-s", lua.name, base],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(lua.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale, out


def booked(url: str) -> tuple[int, int, list[tuple[int, int]]]:
    """(cases booked over HTTP, the slots' booked sum, each slot's (capacity, booked))."""
    with psycopg.connect(url) as conn:
        cases = conn.execute(
            "SELECT count(*) FROM hall_cases WHERE matter_id = %s AND status = 'booked'",
            (MATTER,),
        ).fetchone()
        slots = conn.execute(
            "SELECT capacity, booked FROM hall_slots WHERE matter_id = %s ORDER BY starts_at",
            (MATTER,),
        ).fetchall()
    assert cases is not None
    return int(cases[0]), sum(b for _, b in slots), [(int(c), int(b)) for c, b in slots]


def serve(url: str) -> tuple[subprocess.Popen[bytes], str]:
    """``servicemap serve --workers 2`` over `url`, per-address bounds lifted for the load."""
    port = free_port()
    process = subprocess.Popen(
        [str(PROJECT_ROOT / ".venv/bin/servicemap"), "serve", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "2"],
        env={**os.environ, "DATABASE_URL": url, "SERVICEMAP_LOG_LEVEL": "warning",
             "SERVICEMAP_DB_POOL_MIN": "16", "SERVICEMAP_DB_POOL_MAX": "16",
             "SERVICEMAP_HALLS_MAX_PER_ADDRESS_PER_HOUR": "1000000",
             "SERVICEMAP_HALLS_MAX_BOOKINGS_PER_PHONE": "100"},
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, timeout_s=180)  # the machine may be busy
    except BaseException:
        stop(process)  # never left serving a database that is about to be dropped
        raise
    return process, base


def main() -> None:
    """Print bookings/s, p99 and the ratio to pgbench; assert zero overbooking."""
    args = arguments()
    with own_database("halls") as url:
        starts = prepare(url)
        script = PGBENCH_BOOK.format(
            last=SLOTS - 1, hall=HALL, matter=PGBENCH_MATTER, first=starts[0].isoformat(),
            day=starts[0].date(),
        )  # fmt: skip
        before = pgbench(url, script, args.seconds, clients=DB_CLIENTS)
        lua_starts = ",".join(f'"{s.isoformat()}"' for s in starts)
        process, base = serve(url)
        try:
            wrk(base, WRK_BOOK.format(starts=lua_starts, hall=HALL, matter=MATTER, round=0), 2)
            warm, _, _ = booked(url)
            started = time.perf_counter()
            rps, p99, _ = wrk(
                base, WRK_BOOK.format(starts=lua_starts, hall=HALL, matter=MATTER, round=1),
                args.seconds,
            )  # fmt: skip
            elapsed = time.perf_counter() - started
            timed, _, _ = booked(url)
            filled_early = timed >= SLOTS * CAPACITY
            # fill every slot to the last place (more rounds of new phone numbers)
            for round_no in range(2, 40):
                if booked(url)[0] >= SLOTS * CAPACITY:
                    break
                wrk(base, WRK_BOOK.format(starts=lua_starts, hall=HALL, matter=MATTER,
                                          round=round_no), 5)  # fmt: skip
        finally:
            stop(process)
        # the baseline again after the HTTP run: the mean of both brackets it in time
        after = pgbench(url, script, args.seconds, clients=DB_CLIENTS)
        tps = (before + after) / 2
        cases, total, slots = booked(url)
    bookings_per_s = (timed - warm) / min(elapsed, args.seconds)
    ratio = bookings_per_s / tps
    print(f"{SLOTS} slots × {CAPACITY} places; {CLIENTS} HTTP connections; 2 workers")
    print(
        f"pgbench booking statement ({DB_CLIENTS} clients): {tps:,.0f} bookings/s"
        f" (before {before:,.0f}, after {after:,.0f})"
    )
    print(f"POST /api/v1/appointments: {bookings_per_s:,.0f} bookings/s ({rps:,.0f} req/s),"
          f" p99 {p99:.1f} ms" + (" (slots filled before the end: a lower bound)"
                                 if filled_early else ""))  # fmt: skip
    print(f"ratio API / pgbench: {ratio:.2f} (target ≥ {TARGET})")
    overbooked = [(c, b) for c, b in slots if b > c]
    print(
        f"after filling: {cases:,} bookings stored, slots hold {total:,},"
        f" capacity {SLOTS * CAPACITY:,}; overbooked slots: {len(overbooked)}"
    )
    if overbooked or cases != total or cases > SLOTS * CAPACITY:
        raise SystemExit(f"OVERBOOKING: {overbooked}, {cases} cases for {total} places")
    if len(slots) != SLOTS or any(b != c for c, b in slots):
        raise SystemExit(f"the slots were not filled exactly: {slots}")
    if ratio < TARGET:
        raise SystemExit(f"halls booking ratio {ratio:.2f} < {TARGET}")


if __name__ == "__main__":
    main()
