"""Simulated smart-toilet sensors with realistic occupancy (demo and benchmark).

Each simulated toilet has stalls that people enter at a rate following the district's daily
rhythm (morning, lunch and evening peaks, quiet nights), stay a few minutes (log-normal) and
leave; ammonia rises with use and airs out; the battery drains slowly. Readings are posted
to the real HTTP API with the device's token, and readings a failed post could not deliver
are sent again in the next batch: the service's (device, seq) idempotency makes that safe.
"""

from __future__ import annotations

import http.client
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import orjson
import psycopg

from geoservice.toilets.admin import add_device, revoke_device
from layers import LIVE_STATUS, keys_with

#: arrivals per stall per minute by local hour (a busy urban public toilet)
HOURLY_ARRIVALS = (
    0.02, 0.01, 0.01, 0.01, 0.02, 0.05, 0.12, 0.25, 0.35, 0.25, 0.2, 0.25,
    0.35, 0.3, 0.2, 0.2, 0.22, 0.28, 0.35, 0.3, 0.2, 0.12, 0.06, 0.03,
)  # fmt: skip
#: NH₃ the room airs out towards (ppm) and how fast (seconds)
NH3_BASELINE = 2.0
NH3_AIRING_S = 1800.0
#: most readings re-sent in one batch after failures
MAX_BACKLOG = 500


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth; the means here are small)."""
    if mean <= 0:
        return 0
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


@dataclass
class ToiletSim:
    """One toilet block's sensor: stall occupancy, entries, ammonia, battery."""

    stalls: list[str]
    rng: random.Random
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    seq: int = 0
    nh3_ppm: float = NH3_BASELINE
    battery_pct: float = 100.0
    humidity_pct: float = 60.0
    paper_pct: float = 100.0
    busy_until: dict[str, float] = field(default_factory=dict)
    last: float | None = None

    def step(self, at: datetime) -> dict[str, Any]:
        """Advance to `at` and return the reading the sensor would post then."""
        now = at.timestamp()
        dt = 0.0 if self.last is None else max(0.0, now - self.last)
        self.last = now
        hour = at.astimezone(self.timezone).hour
        arrivals = _poisson(self.rng, HOURLY_ARRIVALS[hour] * len(self.stalls) * dt / 60)
        for _ in range(arrivals):
            free = [s for s in self.stalls if self.busy_until.get(s, 0.0) <= now]
            if not free:
                break
            stall = self.rng.choice(free)
            self.busy_until[stall] = now + self.rng.lognormvariate(math.log(180), 0.5)
        self.nh3_ppm = NH3_BASELINE + (self.nh3_ppm - NH3_BASELINE) * math.exp(-dt / NH3_AIRING_S)
        self.nh3_ppm += 0.15 * arrivals
        self.battery_pct = max(0.0, self.battery_pct - dt * 2e-5)
        self.paper_pct = max(0.0, self.paper_pct - 0.3 * arrivals)
        self.humidity_pct = min(95.0, max(30.0, self.humidity_pct + self.rng.uniform(-0.5, 0.5)))
        reading = {
            "seq": self.seq,
            "observed_at": at.isoformat(),
            "stalls": [
                {"id": s, "occupied": self.busy_until.get(s, 0.0) > now} for s in self.stalls
            ],
            "people_count": arrivals,
            "nh3_ppm": round(self.nh3_ppm, 2),
            "humidity_pct": round(self.humidity_pct, 1),
            "battery_pct": round(self.battery_pct, 2),
            "consumables": {"paper": round(self.paper_pct, 1)},
        }
        self.seq += 1
        return reading


def stall_count(attributes: dict[str, Any] | None) -> int:
    """Stalls of a toilet from its attributes (1..12; 4 when unknown)."""
    attributes = attributes or {}
    total = sum(
        int(attributes.get(k) or 0) for k in ("stalls_male", "stalls_female", "stalls_unisex")
    )
    return min(12, max(1, total)) if total else 4


class Poster:
    """Posts JSON over one keep-alive HTTP connection (standard library only)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.base = parts.path.rstrip("/")
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, token: str) -> tuple[int, bytes]:
        """POST and return (status, body); connection errors surface as OSError."""
        for attempt in range(2):
            if self._conn is None:
                cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
                self._conn = cls(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(
                    "POST",
                    self.base + path,
                    body=body,
                    headers={
                        "Content-Type": "application/json",
                        "Authorization": f"Bearer {token}",
                    },
                )
                response = self._conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def run_simulation(
    conn: psycopg.Connection[dict[str, Any]],
    *,
    toilets: int,
    interval: float,
    url: str,
    duration: float = 0.0,
    seed: int = 7,
    say: Callable[[str], object] = print,
) -> dict[str, int]:
    """Register sensors on `toilets` toilets, post readings every `interval` s; revoke on exit."""
    rows = conn.execute(
        "SELECT id, attributes FROM facilities WHERE layer = ANY(%s) AND status = 'active'"
        " ORDER BY id LIMIT %s",
        (list(keys_with(LIVE_STATUS)), toilets),
    ).fetchall()
    if not rows:
        raise SystemExit("no active toilets loaded: run `servicemap demo --no-serve` first")
    rng = random.Random(seed)  # noqa: S311 - simulation, not security
    sims: list[tuple[str, ToiletSim, list[dict[str, Any]]]] = []
    devices: list[int] = []
    for row in rows:
        n = stall_count(row["attributes"])
        device_id, token = add_device(conn, row["id"], n)
        devices.append(device_id)
        sims.append((token, ToiletSim([str(i) for i in range(1, n + 1)], rng), []))
    say(f"{len(sims)} simulated sensors posting to {url} every {interval:g}s (Ctrl-C stops)")
    totals = {"sensors": len(sims), "posts": 0, "accepted": 0, "duplicates": 0, "failed": 0}
    poster = Poster(url)
    started = time.monotonic()
    try:
        while duration <= 0 or time.monotonic() - started < duration:
            tick = time.monotonic()
            for token, sim, backlog in sims:
                backlog.append(sim.step(datetime.now(UTC)))
                del backlog[:-MAX_BACKLOG]
                body = orjson.dumps(backlog[0] if len(backlog) == 1 else {"readings": backlog})
                totals["posts"] += 1
                try:
                    status, answer = poster.post("/api/v1/sensors/readings", body, token)
                except OSError:
                    status, answer = 0, b""
                if status == 200:
                    result = orjson.loads(answer)
                    totals["accepted"] += int(result["accepted"])
                    totals["duplicates"] += int(result["duplicates"])
                    backlog.clear()
                else:
                    totals["failed"] += 1
                    if 400 <= status < 500 and status != 429:
                        # refused for good (e.g. a clock far off): re-sending cannot help
                        backlog.clear()
            time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    except KeyboardInterrupt:
        pass
    finally:
        poster.close()
        for device_id in devices:
            revoke_device(conn, device_id)
    return totals
