"""Group commit for sensor posts: concurrent batches share one transaction.

Every post waits for the commit of the transaction that stored it before it is answered, so
nothing acknowledged can be lost; what is shared is the round trips and the commit. Writer
threads (WRITERS per process), each with its own connection, take the posts waiting in a
queue (never two of one device in one group, so each post's counts stay its own), sort them
by toilet (every transaction — across processes too — locks toilets' status rows in the same
order: no deadlocks) and store them in one transaction (functions of migration 0006):

1. ``toilet_ingest_begin``: devices still live, the toilets' status rows locked, stalls moved
   forward, and the seqs of each post already stored (stable while the lock is held);
2. COPY of the readings not stored yet straight into ``toilet_readings`` — the cheapest way
   into PostgreSQL, the same path as a bulk load;
3. ``toilet_ingest_end``: each toilet's status from its stalls and newest reading.

A group that fails as a whole because of one post (a device revoked meanwhile, too many
stalls) is re-run post by post, so the others still succeed. A lost connection fails the
group's posts (503) and the next group connects again: the service recovers on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from geoservice.db.connection import database_url, libpq_url
from geoservice.settings import Settings

logger = logging.getLogger("servicemap")

#: writer threads (connections) per process: one, so the posts arriving while it stores a
#: group form the next group (bigger groups share more per-transaction work: measured faster
#: than two writers splitting them)
WRITERS = 1
#: most posts in one transaction
MAX_GROUP = 32
#: how long a writer waits for the posts of the devices active on this process (seconds):
#: a post's answer comes at most this much later
GATHER_S = 0.005
#: a device that posted within this many seconds is active: it posts again once answered
ACTIVE_S = 1.0
#: how long closing waits for a writer to finish its group (statements are bounded anyway)
CLOSE_TIMEOUT_S = 30.0

_BEGIN = "SELECT toilet_ingest_begin(%s::jsonb, %s::integer, %s::integer) AS state"
_END = "SELECT toilet_ingest_end(%s::jsonb, %s::float8, %s::bigint)"
#: the columns of a reading row, in the order of `reading_row`
READING_COLUMNS = (
    "device_id", "seq", "facility_id", "observed_at", "stalls", "stalls_total", "stalls_free",
    "people_count", "nh3_ppm", "humidity_pct", "battery_pct", "consumables",
)  # fmt: skip
_COPY = sql.SQL("COPY toilet_readings ({}) FROM STDIN").format(
    sql.SQL(", ").join(map(sql.Identifier, READING_COLUMNS))
)
#: positions in a reading row
_SEQ, _OBSERVED, _PEOPLE = 1, 3, 7


def reading_row(device_id: int, facility_id: str, reading: Any) -> tuple[Any, ...]:
    """A validated reading as a row of toilet_readings (READING_COLUMNS)."""
    get = reading.get
    stalls = get("stalls") or ()
    consumables = get("consumables")
    return (
        device_id, reading["seq"], facility_id, reading["observed_at"],
        orjson.dumps(stalls).decode(), len(stalls),
        [stall["occupied"] for stall in stalls].count(False), get("people_count"),
        get("nh3_ppm"), get("humidity_pct"), get("battery_pct"),
        orjson.dumps(consumables).decode() if consumables is not None else None,
    )  # fmt: skip


@dataclass
class Job:
    """One post waiting to be stored."""

    device_id: int
    facility_id: str
    #: the post's JSON object for toilet_ingest_begin (device, facility, seq range, stalls)
    begin: bytes
    #: its readings as rows (`reading_row`), one per seq
    rows: list[tuple[Any, ...]]
    #: its newest reading for toilet_ingest_end (facility, newest, nh3_ppm, humidity_pct, …)
    newest: dict[str, Any]
    months: set[date]
    future: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class IngestWriter:
    """Stores sensor posts in shared transactions; `submit` answers after the commit.

    The writers are threads with blocking connections, not tasks of the event loop: a group's
    transaction takes four round trips, and a task would wait at each of them behind every
    request the loop is validating meanwhile (milliseconds each), while a thread resumes as
    soon as the database answers (libpq waits without holding the GIL).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pending: deque[Job] = deque()
        #: when each device active on this process last posted (see ACTIVE_S)
        self._last_post: dict[int, float] = {}
        self._ready = threading.Condition()
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        #: months whose readings partition is known to exist
        self.partitions: set[date] = set()

    def start(self) -> None:
        """Start the writer threads (called from the app's event loop)."""
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._run, name=f"sensor-writer-{i}", daemon=True)
            for i in range(WRITERS)
        ]
        for thread in self._threads:
            thread.start()

    async def close(self) -> None:
        """Stop the writers once their current group is stored; posts still waiting fail
        (their clients retry)."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, CLOSE_TIMEOUT_S)
        self._threads = []
        with self._ready:
            waiting = list(self._pending)
            self._pending.clear()
        for job in waiting:
            if not job.future.done():
                job.future.set_exception(psycopg.OperationalError("the service is shutting down"))

    async def submit(self, job: Job) -> int:
        """Queue a post and wait until it is committed; the readings newly stored."""
        if not self._threads:
            self.start()
        with self._ready:
            self._pending.append(job)
            self._note_post(job.device_id, time.monotonic())
            self._ready.notify()
        return await job.future

    def _note_post(self, device_id: int, now: float) -> None:
        """Remember that a device posted (holding the condition)."""
        # re-inserted: the dict stays ordered by last post, oldest first
        self._last_post.pop(device_id, None)
        self._last_post[device_id] = now

    def _active_devices(self, now: float) -> int:
        """How many posts to wait for: the devices that posted within ACTIVE_S, at most
        MAX_GROUP (holding the condition; forgets the others)."""
        since = now - ACTIVE_S
        stale = list(itertools.takewhile(lambda item: item[1] < since, self._last_post.items()))
        for device, _ in stale:
            del self._last_post[device]
        return min(MAX_GROUP, max(1, len(self._last_post)))

    def _take_group(self) -> list[Job]:
        """Up to MAX_GROUP waiting posts, never two of one device (holding the condition)."""
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
        return group

    def _settle(self, job: Job, result: int | None, error: BaseException | None) -> None:
        """Answer a post from a writer thread (futures belong to the event loop)."""

        def settle() -> None:
            if job.future.done():
                return
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result or 0)

        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody waits
            self._loop.call_soon_threadsafe(settle)

    def _run(self) -> None:
        conn: psycopg.Connection[dict[str, Any]] | None = None
        try:
            while True:
                with self._ready:
                    while not self._pending and not self._closing:
                        self._ready.wait()
                    # a short wait lets the active devices' posts join: per-transaction work
                    # (locks, the seq check, COPY set-up, the commit) is shared by more
                    # readings, and no device's post is left to a transaction of its own
                    now = time.monotonic()
                    until = now + GATHER_S
                    expected = self._active_devices(now)
                    while len(self._pending) < expected and not self._closing:
                        left = until - time.monotonic()
                        if left <= 0:
                            break
                        self._ready.wait(left)
                    if self._closing:
                        return
                    group = self._take_group()
                try:
                    if conn is None or conn.closed or conn.broken:
                        conn = self._connect()
                    for job, result in self._store(conn, group):
                        self._settle(job, *result)
                except Exception as exc:  # noqa: BLE001 - handed to every waiting post
                    if isinstance(exc, psycopg.OperationalError) and conn is not None:
                        conn.close()
                        conn = None
                    for job in group:
                        self._settle(job, None, exc)
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        db = self.settings.db
        return psycopg.connect(
            libpq_url(database_url(db)),
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=5,
            # the ingest functions' statements take the same shapes every time: their generic
            # plans (index scans either way) save re-planning them per call (~0.1 ms a call)
            options=(
                f"-c statement_timeout={db.statement_timeout_ms} -c TimeZone=UTC"
                " -c plan_cache_mode=force_generic_plan"
            ),
        )

    def _store(
        self, conn: psycopg.Connection[dict[str, Any]], group: list[Job]
    ) -> list[tuple[Job, tuple[int | None, BaseException | None]]]:
        """Each post with (readings newly stored, None) or (None, the error refusing it)."""
        self._ensure_partitions(conn, set().union(*(job.months for job in group)))
        try:
            accepted = self._call(conn, group)
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ProgramLimitExceeded):
            if len(group) == 1:
                raise
            # one post spoilt the group: store the others one by one
            outcomes: list[tuple[Job, tuple[int | None, BaseException | None]]] = []
            for job in group:
                try:
                    outcomes.append((job, (self._call(conn, [job])[0], None)))
                except (
                    psycopg.errors.InsufficientPrivilege,
                    psycopg.errors.ProgramLimitExceeded,
                ) as exc:
                    outcomes.append((job, (None, exc)))
            return outcomes
        return [(job, (n, None)) for job, n in zip(group, accepted, strict=True)]

    def _call(self, conn: psycopg.Connection[dict[str, Any]], group: list[Job]) -> list[int]:
        ordered = sorted(group, key=lambda job: job.facility_id)
        for attempt in range(3):
            try:
                accepted = self._transaction(conn, ordered)
                break
            except psycopg.errors.CheckViolation:
                # a partition was dropped (prune) after this process remembered it
                if attempt:
                    raise
                self.partitions.clear()
                self._ensure_partitions(conn, set().union(*(job.months for job in group)))
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == 2:
                    raise
        return [accepted[id(job)] for job in group]

    def _transaction(
        self, conn: psycopg.Connection[dict[str, Any]], ordered: list[Job]
    ) -> dict[int, int]:
        """Store the group (sorted by toilet) in one transaction; the readings newly stored per
        job (by id). Four round trips: BEGIN + begin, the COPY's two, end + COMMIT (pipelined)."""
        try:
            return self._steps(conn, ordered)
        except BaseException:
            if not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            raise

    def _steps(
        self, conn: psycopg.Connection[dict[str, Any]], ordered: list[Job]
    ) -> dict[int, int]:
        toilets = self.settings.toilets
        begin = b"[" + b",".join(job.begin for job in ordered) + b"]"
        with conn.pipeline() as pipeline:
            conn.execute("BEGIN")
            cursor = conn.execute(
                _BEGIN,
                (begin.decode(), toilets.max_stalls_per_device, toilets.max_reading_age_s),
                prepare=True,
            )
            pipeline.sync()
            row = cursor.fetchone()
        assert row is not None
        stored: dict[str, list[int]] = row["state"]["stored"]
        cleaned = {k: datetime.fromisoformat(v) for k, v in row["state"]["cleaned"].items()}
        accepted: dict[int, int] = {}
        fresh: list[tuple[Any, ...]] = []
        ends: list[dict[str, Any]] = []
        for job in ordered:
            seen = set(stored.get(str(job.device_id), ()))
            rows = [r for r in job.rows if r[_SEQ] not in seen] if seen else job.rows
            clean = cleaned.get(job.facility_id)
            # entries observed after the toilet's last cleaning count towards use since it
            people = sum(
                r[_PEOPLE] for r in rows if r[_PEOPLE] and (clean is None or r[_OBSERVED] > clean)
            )
            accepted[id(job)] = len(rows)
            fresh.extend(rows)
            ends.append({**job.newest, "people": people})
        if fresh:
            with conn.cursor().copy(_COPY) as copy:
                for reading in fresh:
                    copy.write_row(reading)
        with conn.pipeline():
            conn.execute(
                _END,
                (orjson.dumps(ends).decode(), toilets.nh3_alert_ppm, toilets.busy_after_people),
                prepare=True,
            )
            conn.execute("COMMIT")
        return accepted

    def _ensure_partitions(
        self, conn: psycopg.Connection[dict[str, Any]], months: set[date]
    ) -> None:
        for month in sorted(months - self.partitions):
            conn.execute("SELECT toilet_readings_ensure_partition(%s::date)", (month,))
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
