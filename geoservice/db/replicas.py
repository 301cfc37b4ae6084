"""Reads on PostgreSQL streaming standbys: a pool per standby, health and lag checks, choosing one.

``SERVICEMAP_DATABASE_READ_URLS`` names the standbys; everything that writes keeps using
``DATABASE_URL`` (the primary). What a read routed here is guaranteed:

- **Bounded staleness.** A background task checks the primary and every standby each
  ``SERVICEMAP_DB_REPLICA_CHECK_S`` on a dedicated connection (never a pool's, so a busy pool
  cannot make a standby look dead). It samples the primary's WAL position with this process's
  clock; a standby's lag is how long ago the primary first held WAL the standby has not
  replayed (``pg_last_wal_replay_lsn()``), so it needs no clock agreement between machines
  and an idle primary never makes a standby look behind. A standby further behind than
  ``SERVICEMAP_MAX_REPLICA_LAG_S`` (or down, or not in recovery) gets no reads until a check
  finds it back; with none usable, reads go to the primary.
- **Read-your-writes.** After a write, the caller learns the primary's WAL position
  (:meth:`ReadRouter.primary_lsn`); a read carrying it only goes to a standby whose replayed
  position, as last checked, is at or past it — else to the primary.
- **Failover of reads.** A read that failed on a standby is retried by the caller on the
  primary after :meth:`ReadRouter.suspect` took the standby out; the next check decides
  whether it comes back (its pool's broken connections are dropped first).

Reads are spread evenly over the usable standbys (round robin per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from geoservice.db.connection import create_pool, libpq_url, mask_url
from geoservice.settings import DatabaseSettings

logger = logging.getLogger("servicemap")

#: seconds a health check query may take before the server counts as down
CHECK_TIMEOUT_S = 2.0

State = Literal["starting", "ok", "lagging", "down", "not_standby"]

_PRIMARY_LSN = "SELECT pg_current_wal_lsn()::text AS lsn"
_STANDBY_STATE = """
SELECT pg_is_in_recovery() AS recovery,
       pg_last_wal_replay_lsn()::text AS replay,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS replay_age_s
"""


def parse_lsn(text: str) -> int:
    """A WAL position (``16/B374D848``) as an integer; ValueError when malformed."""
    high, sep, low = text.strip().partition("/")
    if not sep or not (0 < len(high) <= 8 and 0 < len(low) <= 8):
        raise ValueError(f"not a WAL position: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    """An integer WAL position as PostgreSQL prints it."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass(eq=False)
class Standby:
    """One standby: its pool and what the last check found."""

    url: str
    pool: AsyncConnectionPool[Any]
    state: State = "starting"
    replay_lsn: int | None = None
    lag_s: float | None = None
    lag_bytes: int | None = None
    detail: str | None = None
    checked_at: float | None = None
    conn: psycopg.AsyncConnection[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The URL with its password masked."""
        return mask_url(self.url)

    def report(self) -> dict[str, Any]:
        """What /readyz shows of this standby."""
        return {
            "url": self.name,
            "status": self.state,
            "lag_s": None if self.lag_s is None else round(self.lag_s, 3),
            "lag_bytes": self.lag_bytes,
            "replay_lsn": None if self.replay_lsn is None else format_lsn(self.replay_lsn),
            "detail": self.detail,
        }


class LagClock:
    """The primary's WAL position over time, sampled with this process's clock.

    ``lag(replay)`` is how long ago the primary first held WAL beyond `replay`: 0 when the
    standby has everything the primary had at the newest sample.
    """

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, lsn: int) -> None:
        """Record that the primary was at `lsn` at monotonic time `at`."""
        self.samples.append((at, lsn))
        while len(self.samples) > 2 and self.samples[1][0] < at - self.keep_s:
            self.samples.popleft()

    def lag(self, replay: int, now: float) -> tuple[float, bool]:
        """(seconds behind, whether the samples reach back far enough to tell exactly)."""
        for index, (at, lsn) in enumerate(self.samples):
            if lsn > replay:
                # behind even the oldest sample: at least this far behind, maybe more
                return now - at, index > 0
        return 0.0, True

    @property
    def newest(self) -> int | None:
        """The primary's last sampled WAL position."""
        return self.samples[-1][1] if self.samples else None


class ReadRouter:
    """Standby pools, their health and lag, and which one a read gets."""

    def __init__(
        self,
        primary: AsyncConnectionPool[Any],
        primary_url: str,
        urls: list[str],
        settings: DatabaseSettings,
    ) -> None:
        self.primary = primary
        self.primary_url = primary_url
        self.settings = settings
        self.max_lag_s = settings.max_replica_lag_s
        self.standbys = [Standby(url, create_pool(url, settings)) for url in urls]
        self.clock = LagClock(keep_s=max(10.0, 3 * settings.max_replica_lag_s))
        self.primary_state: State = "starting"
        self.primary_detail: str | None = None
        self._primary_conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._usable: list[Standby] = []
        self._turn = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- life ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Open the pools, check every server once, keep checking in the background."""
        for standby in self.standbys:
            await standby.pool.open(wait=False)
        await self.check()
        self._task = asyncio.create_task(self._run(), name="servicemap-replica-checks")

    async def close(self) -> None:
        """Stop checking; close the standby pools and the check connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for standby in self.standbys:
            await _close(standby.conn)
            await standby.pool.close()
        await _close(self._primary_conn)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.replica_check_s)
            self._wake.clear()
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - the checker must outlive any one failure
                logger.exception("replica check failed")

    # --- choosing -------------------------------------------------------------------------
    def choose(self, after_lsn: int | None = None) -> Standby | None:
        """A usable standby (in turn) that has replayed `after_lsn`, or None: use the primary."""
        usable = self._usable
        if after_lsn is not None:
            usable = [s for s in usable if s.replay_lsn is not None and s.replay_lsn >= after_lsn]
        if not usable:
            return None
        self._turn += 1
        return usable[self._turn % len(usable)]

    def suspect(self, standby: Standby, reason: str) -> None:
        """Take a standby out after a read failed on it; the next check (now) decides."""
        if standby.state == "ok":
            logger.warning(
                "standby %s failed a read (%s); reads go elsewhere", standby.name, reason
            )
        standby.state, standby.detail = "down", reason
        self._usable = [s for s in self._usable if s is not standby]
        self._wake.set()

    async def primary_lsn(self) -> str:
        """The primary's current WAL position (after a write: what its reads must wait for)."""
        async with self.primary.connection(timeout=CHECK_TIMEOUT_S) as conn:
            cursor = await conn.execute(_PRIMARY_LSN, prepare=True)
            row = await cursor.fetchone()
        assert row is not None
        return str(row["lsn"])

    # --- checking -------------------------------------------------------------------------
    async def check(self) -> None:
        """One round: sample the primary's WAL position, then every standby's state and lag."""
        try:
            self._primary_conn = await _connected(self._primary_conn, self.primary_url)
            row = await _fetch(self._primary_conn, _PRIMARY_LSN)
            self.clock.add(time.monotonic(), parse_lsn(row["lsn"]))
            self.primary_state, self.primary_detail = "ok", None
        except (psycopg.Error, OSError, TimeoutError) as exc:
            # standbys are then judged against the last samples: reads keep being served
            self.primary_state, self.primary_detail = "down", _reason(exc)
            await _close(self._primary_conn)
            self._primary_conn = None
        await asyncio.gather(*(self._check_standby(s) for s in self.standbys))
        self._usable = [s for s in self.standbys if s.state == "ok"]

    async def _check_standby(self, standby: Standby) -> None:
        was = standby.state
        try:
            standby.conn = await _connected(standby.conn, standby.url)
            row = await _fetch(standby.conn, _STANDBY_STATE)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await _close(standby.conn)
            standby.conn = None
            standby.state, standby.detail = "down", _reason(exc)
            standby.lag_s = standby.lag_bytes = None
            if was == "ok":
                logger.warning("standby %s is down: %s", standby.name, standby.detail)
            return
        now = time.monotonic()
        standby.checked_at = now
        if not row["recovery"] or row["replay"] is None:
            standby.state, standby.detail = "not_standby", "not in recovery: not a standby"
            return
        standby.replay_lsn = replay = parse_lsn(row["replay"])
        newest = self.clock.newest
        standby.lag_bytes = None if newest is None else max(0, newest - replay)
        lag_s, exact = self.clock.lag(replay, now)
        if not exact and row["replay_age_s"] is not None:
            # behind everything sampled (just started): its last replayed commit's age bounds it
            lag_s = max(lag_s, float(row["replay_age_s"]))
        standby.lag_s = lag_s
        if lag_s > self.max_lag_s:
            standby.state = "lagging"
            standby.detail = f"{lag_s:.1f} s behind the primary (limit {self.max_lag_s:g} s)"
        else:
            if was != "ok":
                # connections opened before it went down are broken: drop them before use
                await standby.pool.check()
            standby.state, standby.detail = "ok", None
        if standby.state != was and "starting" not in (was, standby.state):
            logger.warning("standby %s: %s → %s", standby.name, was, standby.state)

    def report(self) -> dict[str, Any]:
        """The primary's and each standby's state, for /readyz."""
        return {
            "primary": {"status": self.primary_state, "detail": self.primary_detail},
            "standbys": [s.report() for s in self.standbys],
        }


async def _connected(
    conn: psycopg.AsyncConnection[dict[str, Any]] | None, url: str
) -> psycopg.AsyncConnection[dict[str, Any]]:
    if conn is not None and not conn.closed and not conn.broken:
        return conn
    await _close(conn)
    return await asyncio.wait_for(
        psycopg.AsyncConnection.connect(
            libpq_url(url),
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=max(2, int(CHECK_TIMEOUT_S)),
            application_name="servicemap-replica-check",
            options=f"-c statement_timeout={int(CHECK_TIMEOUT_S * 1000)}",
        ),
        CHECK_TIMEOUT_S + 1,
    )


async def _fetch(conn: psycopg.AsyncConnection[dict[str, Any]], query: str) -> dict[str, Any]:
    cursor = await asyncio.wait_for(conn.execute(query), CHECK_TIMEOUT_S)
    row = await cursor.fetchone()
    assert row is not None
    return row


async def _close(conn: psycopg.AsyncConnection[Any] | None) -> None:
    if conn is not None:
        with contextlib.suppress(psycopg.Error, OSError):
            await conn.close()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1]}" if text else type(exc).__name__
