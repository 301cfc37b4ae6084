"""Group commit for sensor posts: concurrent batches share one transaction.

Every post waits for the commit of the transaction that stored it before it is answered, so
nothing acknowledged can be lost; what is shared is the round trip, the call overhead and the
commit. A few writer tasks per process, each with its own connection, take the posts waiting
in a queue (never two of one device in one group, so each post's counts stay its own), sort
them by toilet (every transaction locks toilets' status rows in the same order: no
deadlocks) and store them with one call of ``toilet_ingest_many`` (migration 0005).

A group that fails as a whole because of one post (a device revoked meanwhile, too many
stalls) is re-run post by post, so the others still succeed. A lost connection fails the
group's posts (503) and the next group connects again: the service recovers on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import psycopg
from psycopg.rows import dict_row

from geoservice.db import database_url, libpq_url
from geoservice.settings import Settings

logger = logging.getLogger("servicemap")

#: writer tasks (connections) per process: one group can commit while the next one forms
WRITERS = 2
#: most posts in one transaction
MAX_GROUP = 32

_MANY = (
    "SELECT toilet_ingest_many(%s::jsonb, %s::float8, %s::bigint, %s::integer, %s::integer)"
    " AS accepted"
)


@dataclass
class Job:
    """One post waiting to be stored."""

    device_id: int
    facility_id: str
    #: the post's JSON object for toilet_ingest_many
    payload: bytes
    months: set[date]
    future: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class IngestWriter:
    """Stores sensor posts in shared transactions; `submit` answers after the commit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pending: deque[Job] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._connections: list[psycopg.AsyncConnection[dict[str, Any]] | None] = []
        #: months whose readings partition is known to exist
        self.partitions: set[date] = set()

    def start(self) -> None:
        """Start the writer tasks (inside the app's event loop)."""
        self._connections = [None] * WRITERS
        self._tasks = [asyncio.create_task(self._run(i)) for i in range(WRITERS)]

    async def close(self) -> None:
        """Stop the writers; posts still waiting fail (their clients retry)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conn in self._connections:
            if conn is not None:
                await conn.close()
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(psycopg.OperationalError("the service is shutting down"))

    async def submit(self, job: Job) -> int:
        """Queue a post and wait until it is committed; the readings newly stored."""
        if not self._tasks:
            self.start()
        self._pending.append(job)
        self._wake.set()
        return await job.future

    def _take_group(self) -> list[Job]:
        group: list[Job] = []
        devices: set[int] = set()
        later: list[Job] = []
        while self._pending and len(group) < MAX_GROUP:
            job = self._pending.popleft()
            if job.device_id in devices:
                later.append(job)
            else:
                devices.add(job.device_id)
                group.append(job)
        # a device's later posts keep their place at the front, in order
        self._pending.extendleft(reversed(later))
        if not self._pending:
            self._wake.clear()
        return group

    async def _run(self, index: int) -> None:
        while True:
            await self._wake.wait()
            group = self._take_group()
            if not group:
                continue
            try:
                await self._store(index, group)
            except asyncio.CancelledError:
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(psycopg.OperationalError("shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every waiting post
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(exc)

    async def _connection(self, index: int) -> psycopg.AsyncConnection[dict[str, Any]]:
        conn = self._connections[index]
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        db = self.settings.db
        conn = await psycopg.AsyncConnection.connect(
            libpq_url(database_url(db)),
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=5,
            options=f"-c statement_timeout={db.statement_timeout_ms} -c TimeZone=UTC",
        )
        self._connections[index] = conn
        return conn

    async def _store(self, index: int, group: list[Job]) -> None:
        try:
            conn = await self._connection(index)
            await self._ensure_partitions(conn, set().union(*(job.months for job in group)))
            results = await self._call(conn, group)
        except psycopg.OperationalError:
            self._connections[index] = None
            raise
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ProgramLimitExceeded):
            if len(group) == 1:
                raise
            # one post spoilt the group: store the others one by one
            for job in group:
                try:
                    job.future.set_result((await self._call(conn, [job]))[0])
                except psycopg.Error as exc:
                    job.future.set_exception(exc)
            return
        for job, accepted in zip(group, results, strict=True):
            job.future.set_result(accepted)

    async def _call(
        self, conn: psycopg.AsyncConnection[dict[str, Any]], group: list[Job]
    ) -> list[int]:
        ordered = sorted(range(len(group)), key=lambda i: group[i].facility_id)
        payload = b"[" + b",".join(group[i].payload for i in ordered) + b"]"
        toilets = self.settings.toilets
        args = (
            payload.decode(),
            toilets.nh3_alert_ppm,
            toilets.busy_after_people,
            toilets.max_stalls_per_device,
            toilets.max_reading_age_s,
        )
        for attempt in range(3):
            try:
                row = await (await conn.execute(_MANY, args, prepare=True)).fetchone()
                break
            except psycopg.errors.CheckViolation:
                # a partition was dropped (prune) after this process remembered it
                if attempt:
                    raise
                self.partitions.clear()
                await self._ensure_partitions(conn, set().union(*(job.months for job in group)))
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == 2:
                    raise
        assert row is not None
        accepted: list[int] = [0] * len(group)
        for position, i in enumerate(ordered):
            accepted[i] = int(row["accepted"][position])
        return accepted

    async def _ensure_partitions(
        self, conn: psycopg.AsyncConnection[dict[str, Any]], months: set[date]
    ) -> None:
        for month in sorted(months - self.partitions):
            await conn.execute("SELECT toilet_readings_ensure_partition(%s::date)", (month,))
            self.partitions.add(month)


@contextlib.asynccontextmanager
async def writer_lifespan(app: Any) -> AsyncIterator[None]:
    """Give the app an ingest writer for its lifetime (started on first use)."""
    writer = IngestWriter(app.state.settings)
    app.state.ingest_writer = writer
    try:
        yield
    finally:
        await writer.close()
