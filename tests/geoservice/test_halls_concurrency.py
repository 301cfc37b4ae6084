"""Never more bookings than capacity: 100 residents book one slot of capacity 3 at once, over
real HTTP against ``servicemap serve --workers 2`` (two processes, two connection pools)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from geoservice.cli import disclosures as cli_disclosures
from geoservice.db.connection import connect
from geoservice.halls.setup import HallsFile, load_halls
from ingest.pipeline import ingest_file
from tests.geoservice.halls_support import (
    CAPACITY,
    MATTER,
    OPEN_HALL,
    future_weekday_slot,
    setup_for_tests,
)
from tests.servers import free_port, stop, wait_ready

SERVICEMAP = Path(sys.executable).with_name("servicemap")
CLIENTS = 100


def halls_only_db(url: str, sample_dir: Path) -> None:
    """The sample's halls, its catalogue and the test set-up (no other layers: quicker)."""
    with connect(url) as conn:
        ingest_file(
            conn, sample_dir / "service_hall.geojson", layer="service_hall", source="sample"
        )
        for step in cli_disclosures.DEMO_STEPS:
            step(conn, sample_dir / "disclosures.json")
        setup = [h for h in setup_for_tests() if h["facility"] == OPEN_HALL]
        load_halls(conn, HallsFile.model_validate({"halls": setup}))


@pytest.fixture
def server(make_db: Callable[[], str], sample_dir: Path) -> Iterator[tuple[str, str]]:
    """(base URL, database URL) of `servicemap serve --workers 2` over a halls database."""
    url = make_db()
    halls_only_db(url, sample_dir)
    port = free_port()
    process = subprocess.Popen(
        [str(SERVICEMAP), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env={
            **os.environ,
            "DATABASE_URL": url,
            "SERVICEMAP_LOG_LEVEL": "warning",
            "SERVICEMAP_HALLS_MAX_PER_ADDRESS_PER_HOUR": "100000",
        },  # fmt: skip
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process)
        yield base, url
    finally:
        stop(process)


async def book_together(base: str, start: str, n: int) -> list[httpx.Response]:
    """n bookings of one slot, each from its own connection, released at once."""
    gate = asyncio.Event()
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            body = {"hall": OPEN_HALL, "matter": MATTER, "start": start, "name": f"居民{i}",
                    "phone": f"139{i:08d}"}  # fmt: skip
            await gate.wait()
            return await client.post("/api/v1/appointments", json=body)

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.sleep(0.2)
        gate.set()
        return await asyncio.gather(*tasks)


def test_100_concurrent_bookings_of_a_slot_of_capacity_3(server: tuple[str, str]) -> None:
    base, url = server
    start = future_weekday_slot(2).isoformat()
    answers = asyncio.run(book_together(base, start, CLIENTS))
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {201: CAPACITY, 409: CLIENTS - CAPACITY}, statuses
    assert all("full" in a.json()["detail"] for a in answers if a.status_code == 409)
    with psycopg.connect(url) as conn:
        booked = conn.execute(
            "SELECT count(*) FROM hall_cases WHERE hall_id = %s AND starts_at = %s"
            " AND status = 'booked'",
            (OPEN_HALL, start),
        ).fetchone()
        slot = conn.execute(
            "SELECT capacity, booked FROM hall_slots WHERE hall_id = %s AND starts_at = %s",
            (OPEN_HALL, start),
        ).fetchone()
    assert booked == (CAPACITY,)
    assert slot == (CAPACITY, CAPACITY)
    # the free count the API shows agrees
    day = start[:10]
    slots = httpx.get(f"{base}/api/v1/halls/{OPEN_HALL}/slots",
                      params={"matter": MATTER, "date": day}).json()  # fmt: skip
    assert next(s for s in slots if s["start"] == start)["free"] == 0
