"""h3_counts follows every change of the facilities exactly, however changes and syncs interleave.

The reference is a recount of the live facilities with h3 itself; the changes are moves, layer
changes, removals, restorations, deletions and re-insertions, several before one sync, and a
change committed while a sync is in the middle of its transaction.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable

import h3
import psycopg
from psycopg.rows import dict_row

from geoservice.query.h3sync import sync_cells
from tests.geoservice.test_nearest import insert_facilities


def _recount(url: str) -> dict[tuple[int, str, int], int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT layer, ST_Y(geom), ST_X(geom) FROM facilities WHERE status <> 'removed'"
        ).fetchall()
    counts = Counter(
        (r, layer, h3.str_to_int(h3.latlng_to_cell(lat, lon, r)))
        for layer, lat, lon in rows
        for r in range(11)
    )
    return dict(counts)


def _stored(url: str) -> dict[tuple[int, str, int], int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT resolution, layer, cell, count FROM h3_counts").fetchall()
    return {(r, layer, cell): n for r, layer, cell, n in rows}


def _sync(url: str, batch: int = 50_000, *, once: bool = False) -> None:
    """Sync until nothing is queued (or one batch only)."""

    async def run() -> None:
        conn = await psycopg.AsyncConnection.connect(url, row_factory=dict_row, autocommit=True)
        async with conn:
            while await sync_cells(conn, batch) and not once:
                pass

    asyncio.run(run())


def _execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_counts_follow_every_kind_of_change(make_db: Callable[[], str]) -> None:
    url = make_db()
    insert_facilities(
        url,
        [{"id": f"f{i}", "lat": 22.55 + i * 0.003, "lon": 114.12 + i * 0.002} for i in range(20)],
    )
    _sync(url)
    assert _stored(url) == _recount(url)
    # several changes to the same facilities before one sync (the first old state must hold)
    _execute(
        url,
        "UPDATE facilities SET geom = ST_SetSRID(ST_MakePoint(114.2, 22.6), 4326) WHERE id = 'f0'",
        "UPDATE facilities SET geom = ST_SetSRID(ST_MakePoint(114.21, 22.61), 4326) WHERE id = 'f0'",
        "UPDATE facilities SET layer = 'school' WHERE id = 'f0'",
        "UPDATE facilities SET status = 'removed' WHERE id = 'f1'",
        "UPDATE facilities SET status = 'active' WHERE id = 'f1'",
        "UPDATE facilities SET status = 'removed' WHERE id = 'f2'",
        "UPDATE facilities SET geom = ST_SetSRID(ST_MakePoint(114.1, 22.5), 4326) WHERE id = 'f2'",
        "DELETE FROM facilities WHERE id = 'f3'",
        "UPDATE facilities SET name = 'renamed only' WHERE id = 'f4'",
    )
    # deleted then inserted again under the same id, somewhere else
    insert_facilities(url, [{"id": "f3", "lat": 22.58, "lon": 114.18, "layer": "clinic"}])
    _sync(url, batch=3)  # in small batches
    assert _stored(url) == _recount(url)
    # removed ones come back; one added; a changed one synced, changed again, synced
    _execute(url, "UPDATE facilities SET status = 'active' WHERE id = 'f2'")
    _sync(url)
    _execute(url, "UPDATE facilities SET layer = 'toilet' WHERE id = 'f2'")
    _sync(url)
    assert _stored(url) == _recount(url)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM h3_pending").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM h3_counts WHERE count <= 0").fetchone() == (0,)


def test_a_change_committed_during_a_sync_is_counted_by_the_next(
    make_db: Callable[[], str],
) -> None:
    """The sync reads a facility, another transaction moves it and commits while the sync
    waits to take it off the queue: it stays queued as counted by that sync, and the next
    sync moves it from there."""
    url = make_db()
    insert_facilities(url, [{"id": "a", "lat": 22.55, "lon": 114.12}])
    _sync(url)
    _execute(
        url, "UPDATE facilities SET geom = ST_SetSRID(ST_MakePoint(114.15, 22.57), 4326)"
    )  # queued: counted at the first spot
    with psycopg.connect(url) as mover:
        # moved again, uncommitted: its queue row is locked until the commit
        mover.execute("UPDATE facilities SET geom = ST_SetSRID(ST_MakePoint(114.2, 22.6), 4326)")
        syncing = threading.Thread(target=_sync, args=(url,), kwargs={"once": True})
        syncing.start()
        # the sync reads the committed state (second spot), then waits on the queue row
        with psycopg.connect(url, autocommit=True) as watch:
            for _ in range(600):
                waiting = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                ).fetchone()
                if waiting and waiting[0]:
                    break
                time.sleep(0.05)
            assert waiting and waiting[0], "the sync never waited on the mover's lock"
        mover.commit()
        syncing.join()
    with psycopg.connect(url) as conn:
        queued = conn.execute("SELECT ST_AsText(old_geom) FROM h3_pending").fetchall()
    assert queued == [("POINT(114.15 22.57)",)]
    _sync(url)
    assert _stored(url) == _recount(url)
    assert _stored(url)[(10, "toilet", h3.str_to_int(h3.latlng_to_cell(22.6, 114.2, 10)))] == 1
