"""The load step: COPY canonical facility records into a staging table, then a set-based upsert.

Everything before this is pure (readers → validate → transform); this is the only step that
writes, and it writes inside the caller's transaction so a failure leaves nothing behind.
Records arrive in chunks (ids already unique in the file). For a source that already has
facilities each chunk is COPYed into the (temporary) staging table, and once the whole file is
staged one INSERT … ON CONFLICT writes what changed, skipping unchanged rows by their content
hash. The first load of a source COPYs straight into the table instead; a large first load into
an empty table builds the secondary indexes once afterwards (`begin_bulk`, `end_bulk`).
A bulk load also counts its facilities' H3 cells (h3_counts) as it goes, instead of leaving a
million facilities queued for geoservice.query.h3sync.sync_cells.
``finish`` then marks what a full load no longer lists as removed.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import psycopg.errors
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import sql

from ingest import h3cells
from ingest.h3tally import TallyProcess
from layers import facility

#: COPY column order: the record columns (layers.facility), where each row came from, its hash
STAGING_COLUMNS = (*facility.RECORD_COLUMNS, "row_no", "content_hash")


def _staging_column(name: str, sql_type: str, required: bool) -> sql.Composable:
    not_null = sql.SQL(" NOT NULL") if required else sql.SQL("")
    return sql.SQL("{} {}{}").format(sql.Identifier(name), sql.SQL(sql_type), not_null)


_STAGING_DDL = sql.SQL("""
CREATE TEMP TABLE IF NOT EXISTS facility_staging ({columns}) ON COMMIT DROP;
-- ids the file lists that were not staged (rejected rows): --full must not mark them removed
CREATE TEMP TABLE IF NOT EXISTS facility_seen (source_id text NOT NULL) ON COMMIT DROP
""").format(
    columns=sql.SQL(", ").join(
        [
            *(_staging_column(f.name, f.sql_type, f.required) for f in facility.RECORD_FIELDS),
            _staging_column("row_no", "bigint", False),
            _staging_column("content_hash", "text", False),
        ]
    )
)

# One statement for the whole staged file. Joined chunk by chunk, every chunk paid a full scan
# of the source's stored rows (a hash join over all of them), so a re-ingest grew with the
# square of the file; staged whole, it is one scan. Unchanged rows are filtered out by their
# content hash (computed client-side, column-wise: `content_hashes`) before the INSERT: ON
# CONFLICT DO UPDATE would otherwise lock (and so rewrite) every existing row even when its
# WHERE is false. Rows go in id order, which keeps the primary-key B-tree inserts local.
_UPSERT_TEMPLATE = """
WITH changed AS (
    SELECT s.*
    FROM facility_staging s
    LEFT JOIN facilities f ON f.source = %(source)s AND f.source_id = s.source_id
    WHERE f.content_hash IS DISTINCT FROM s.content_hash
), written AS (
    INSERT INTO facilities AS f ({columns})
    SELECT {values}
    FROM changed st
    ORDER BY st.id
    ON CONFLICT (source, source_id) DO UPDATE SET {updates}, updated_at = now()
    WHERE f.content_hash IS DISTINCT FROM EXCLUDED.content_hash
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated
FROM written
"""

#: what a stored column takes from a staged row (``st``) where it is not the same-named value
_FROM_STAGING = {
    "source": sql.SQL("%(source)s"),
    "geom": sql.SQL("ST_SetSRID(ST_MakePoint(st.lon, st.lat), 4326)"),
    "footprint": sql.SQL(
        "CASE WHEN st.footprint IS NULL THEN NULL"
        " ELSE ST_SetSRID(ST_GeomFromEWKB(decode(st.footprint, 'hex')), 4326) END"
    ),
}

_UPSERT = sql.SQL(_UPSERT_TEMPLATE).format(
    columns=sql.SQL(", ").join(sql.Identifier(c) for c in facility.LOADED_COLUMNS),
    values=sql.SQL(", ").join(
        _FROM_STAGING.get(c, sql.Identifier("st", c)) for c in facility.LOADED_COLUMNS
    ),
    updates=sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
        for c in facility.UPDATED_COLUMNS
    ),
)

_MARK_REMOVED = sql.SQL("""
UPDATE facilities f
SET status = 'removed', status_reason = %(reason)s, updated_at = now(),
    content_hash = md5(f.content_hash || ':removed')
WHERE f.source = %(source)s AND {live}
  AND NOT EXISTS (SELECT 1 FROM facility_staging s WHERE s.source_id = f.source_id)
  AND NOT EXISTS (SELECT 1 FROM facility_seen r WHERE r.source_id = f.source_id)
""").format(live=sql.SQL(facility.live("f")))

#: a first load of at least this many rows into an empty table is a bulk load
BULK_LOAD_MIN_ROWS = 50_000

# unique constraints no foreign key uses (a foreign key records its index) and nothing but
# their own index depends on
_UNIQUE_CONSTRAINTS = """
SELECT c.conname AS name, pg_get_constraintdef(c.oid) AS definition
FROM pg_constraint c
WHERE c.conrelid = 'facilities'::regclass AND c.contype = 'u'
  AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = c.conindid)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.refobjid = c.oid AND d.classid <> 'pg_class'::regclass)
ORDER BY c.conname
"""

#: the statement-level trigger (migration 0003) that queues inserted facilities for H3
_H3_INSERT_TRIGGER = "facilities_h3_insert"

# Nothing queued and no counts stored: the H3 tables are empty (as they are whenever
# facilities is and every change has been synced), so a bulk load can count itself.
_H3_STATE = """
SELECT (SELECT tgenabled FROM pg_trigger
        WHERE tgrelid = 'facilities'::regclass AND tgname = %(trigger)s) AS enabled,
       NOT EXISTS (SELECT 1 FROM h3_pending) AND NOT EXISTS (SELECT 1 FROM h3_counts) AS empty
"""

_SECONDARY_INDEXES = """
SELECT n.nspname AS schema, c.relname AS name, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indrelid = 'facilities'::regclass
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
ORDER BY c.relname
"""


def facility_id(source: str, source_id: str) -> str:
    """The facility's public id: URL-safe, stable for the same (source, source_id)."""
    digest = hashlib.blake2b(f"{source}\x1f{source_id}".encode(), digest_size=10).digest()
    return base64.b32encode(digest).decode().lower()


_B32_ALPHABET = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz234567", dtype=np.uint8)


def facility_ids(source: str, source_ids: Sequence[str]) -> list[str]:
    """`facility_id` of many source ids at once (the base32 step vectorised)."""
    if not source_ids:
        return []
    # the source's prefix hashed once; each id continues a copy of that state
    prefixed = hashlib.blake2b(f"{source}\x1f".encode(), digest_size=10)
    digests = bytearray()
    for sid in source_ids:
        digest = prefixed.copy()
        digest.update(sid.encode())
        digests += digest.digest()
    bits = np.unpackbits(np.frombuffer(digests, dtype=np.uint8).reshape(-1, 10), axis=1)
    # 80 bits → 16 groups of 5 → base32 letters (exactly base64.b32encode, lower-cased)
    groups = bits.reshape(-1, 16, 5) @ np.array([16, 8, 4, 2, 1], dtype=np.uint8)
    letters = _B32_ALPHABET[groups]
    return letters.view("S16").ravel().astype(str).tolist()


@dataclass
class LoadCounts:
    """What one load changed."""

    staged: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0


def content_hashes(records: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash (hex text) of each record's stored fields, computed column-wise."""
    frame = records.loc[:, list(facility.HASHED_COLUMNS)].copy()
    frame["lon"] = frame["lon"].astype(np.float64).round(8)
    frame["lat"] = frame["lat"].astype(np.float64).round(8)
    frame["accessible"] = frame["accessible"].map({True: "t", False: "f"}).astype(object)
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    hexed = hashes.astype(">u8").tobytes().hex().encode()
    return np.frombuffer(hexed, dtype="S16").astype(str)


# a point's EWKB as PostGIS reads it: little-endian, type Point with the SRID flag, SRID 4326
_POINT_EWKB_HEADER = np.frombuffer(
    b"\x01" + (0x20000001).to_bytes(4, "little") + (4326).to_bytes(4, "little"), dtype=np.uint8
)
_HEX_DIGITS = np.array([f"{b:02X}".encode() for b in range(256)], dtype="S2")


def point_ewkb(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """WGS 84 points as hex EWKB (what PostGIS reads from COPY text), as fixed-width bytes.

    Byte for byte what shapely.to_wkb(hex=True, include_srid=True) writes, built with numpy:
    a million points through shapely took seconds, this takes milliseconds.
    """
    n = len(lon)
    raw = np.empty((n, 25), dtype=np.uint8)
    raw[:, :9] = _POINT_EWKB_HEADER
    raw[:, 9:17] = np.ascontiguousarray(lon, dtype="<f8").view(np.uint8).reshape(n, 8)
    raw[:, 17:] = np.ascontiguousarray(lat, dtype="<f8").view(np.uint8).reshape(n, 8)
    return np.ascontiguousarray(_HEX_DIGITS[raw]).view("S50").reshape(n)


def _arrow(records: pd.DataFrame, columns: Sequence[str]) -> pa.Table:
    """The given record columns as an Arrow table (text columns are Arrow-backed already)."""
    return pa.Table.from_pandas(records.loc[:, list(columns)], preserve_index=False)


@dataclass
class Batch:
    """Rows ready to send: CSV payloads (COPY FROM STDIN) per table, made before sending.

    Building a payload is pure CPU work; done while the previous batch is being written, the
    database never waits on it between two COPYs.
    """

    #: (table, columns, CSV payload), sent in this order
    copies: list[tuple[str, tuple[str, ...], pa.Buffer]] = field(default_factory=list)
    #: rows of facilities it carries
    rows: int = 0
    #: rows inserted by sending it (a first load's batch); else they are only staged
    inserts: bool = False

    def add(self, table_name: str, table: pa.Table) -> None:
        """Add a table's rows (`csv_payload`)."""
        self.copies.append((table_name, tuple(table.column_names), csv_payload(table)))


def send(cur: psycopg.Cursor[Any], batch: Batch) -> LoadCounts:
    """COPY a batch's payloads; what it inserted (a first load's) or staged."""
    for table_name, columns, payload in batch.copies:
        query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            sql.Identifier(table_name), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        with cur.copy(query) as copy:
            copy.write(memoryview(payload))
    if batch.inserts:
        return LoadCounts(staged=batch.rows, inserted=batch.rows)
    return LoadCounts(staged=batch.rows)


def begin(cur: psycopg.Cursor[Any], source: str | None = None) -> bool:
    """Create the run's staging tables; lock `source` against a concurrent load of it.

    Returns whether the source has no facilities yet (its rows can then be COPYed straight in).
    """
    cur.execute(_STAGING_DDL)
    if source is None:
        return False
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%(s)s)::bigint)", {"s": f"ingest:{source}"})
    cur.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM facilities WHERE source = %(s)s) AS fresh", {"s": source}
    )
    return bool(_one(cur)["fresh"])


def staging_batch(records: pd.DataFrame, seen: Sequence[str] = ()) -> Batch:
    """Records (the record columns, optionally row_no) for the staging table.

    `seen`: ids the file lists that are not staged (rejected rows), which --full must not mark
    removed.
    """
    batch = Batch(rows=len(records))
    if not records.empty:
        if "content_hash" not in records.columns:
            records = records.assign(content_hash=content_hashes(records))
        if "row_no" not in records.columns:
            records = records.assign(row_no=np.arange(1, len(records) + 1))
        batch.add("facility_staging", _arrow(records, STAGING_COLUMNS))
    if seen:
        batch.add("facility_seen", pa.table({"source_id": pa.array(seen, pa.string())}))
    return batch


def stage(cur: psycopg.Cursor[Any], records: pd.DataFrame) -> int:
    """COPY records (the record columns, optionally row_no) into the transaction's staging table."""
    return send(cur, staging_batch(records)).staged


def new_batch(records: pd.DataFrame, source: str, *, tally: TallyProcess | None = None) -> Batch:
    """Records of a source that has no facilities yet, to COPY straight into the table.

    `tally`: their H3 counts are added to it (a bulk load, the H3 queue's trigger off:
    `BulkLoad.tally`, written by `end_bulk`). Batches are built one at a time, in order.
    """
    batch = Batch(rows=len(records), inserts=True)
    if records.empty:
        return batch
    if "content_hash" not in records.columns:
        records = records.assign(content_hash=content_hashes(records))
    n = len(records)
    table = _arrow(records, [c for c in facility.LOADED_COLUMNS if c not in ("source", "geom")])
    # the source as a one-value dictionary: no million copies of one string
    table = table.append_column(
        "source", pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int8), [source])
    )
    lon, lat = records["lon"].to_numpy(np.float64), records["lat"].to_numpy(np.float64)
    ewkb = pa.array(point_ewkb(lon, lat), pa.binary(50)).cast(pa.string())
    table = table.append_column("geom", ewkb)
    # in id order the primary key's and the H3 queue's B-tree inserts stay local (measured on a
    # million rows: half the database time of COPYing them in the file's order)
    order = pc.sort_indices(table["id"])
    table = table.take(order).select(list(facility.LOADED_COLUMNS))
    batch.add("facilities", table)
    if tally is not None:
        # counted where live, as geoservice.query.h3sync would count them once queued
        live = (records["status"] != "removed").to_numpy(dtype=bool, na_value=True)
        tally.add_points(lat, lon, records["layer"].to_numpy(dtype=object), live)
    return batch


def counts_table(counts: h3cells.CellCounts) -> pa.Table:
    """h3_counts rows (or changes to them) as an Arrow table, to COPY."""
    return pa.table({
        "resolution": counts.resolution,
        "layer": pa.array(counts.layer, pa.string()),
        "cell": counts.cell,
        "count": counts.count,
    })  # fmt: skip


def csv_payload(table: pa.Table) -> pa.Buffer:
    """A table as COPY … (FORMAT csv) reads it: no header, text always quoted, NULL an
    unquoted empty field."""
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
    return sink.getvalue()


def upsert_staged(cur: psycopg.Cursor[Any], source: str) -> LoadCounts:
    """Write what changed of everything staged for `source` in one statement."""
    cur.execute("SELECT count(*) AS n FROM facility_staging")
    staged = int(_one(cur)["n"])
    if staged == 0:
        return LoadCounts()
    # temporary tables are never analysed automatically: without row counts the planner
    # guesses, and may scan every stored row of the source once per staged row
    cur.execute("ANALYZE facility_staging")
    cur.execute(_UPSERT, {"source": source})
    row = _one(cur)
    counts = LoadCounts(staged=staged, inserted=int(row["inserted"]), updated=int(row["updated"]))
    counts.unchanged = staged - counts.inserted - counts.updated
    return counts


def finish(cur: psycopg.Cursor[Any], source: str, *, full: bool, reason: str | None = None) -> int:
    """With `full`, mark the source's facilities this file did not list as removed."""
    if not full:
        return 0
    cur.execute(
        _MARK_REMOVED,
        {"source": source, "reason": reason or f"no longer in the full load of {source}"},
    )
    return cur.rowcount


@dataclass
class BulkLoad:
    """What a bulk first load into an empty table set aside, to put back before commit."""

    #: (name, pg_get_constraintdef) of the dropped unique constraints
    constraints: list[tuple[str, str]] = field(default_factory=list)
    #: definitions (pg_get_indexdef) of the dropped secondary indexes
    indexes: list[str] = field(default_factory=list)
    #: the H3 insert trigger is off: the load counts its facilities' cells itself
    index_h3: bool = False
    #: where the batches count them (`new_batch`); `end_bulk` writes the counts
    tally: TallyProcess | None = None


def begin_bulk(cur: psycopg.Cursor[Any], expected_rows: int | None) -> BulkLoad | None:
    """For a large first load into an empty table, set indexes and the H3 trigger aside.

    PostgreSQL's advice for populating a table: building indexes once afterwards (sorted GiST
    builds) is far cheaper than updating them row by row. The price is an ACCESS EXCLUSIVE lock
    on facilities until the load commits, so readers wait for the whole load. The rule: only
    when the table is empty, i.e. no reader can be kept from anything stored, and what they
    see after the wait is the complete load (never a half-loaded store). A table holding any
    facility, of any source, keeps its indexes and stays readable during the load. The lock is
    waited for at most a second: readers busy with the table longer, or another load wanting
    it too, make this an ordinary load. Everything is put back by `end_bulk` in the same
    transaction; a failed or rolled-back load restores it all by itself (DDL is transactional).
    """
    if expected_rows is None or expected_rows < BULK_LOAD_MIN_ROWS or not _empty(cur):
        return None
    try:
        bulk = _set_aside(cur)
    except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
        # Readers still busy with the table, or another load waiting for it just as this one
        # does (both hold a share lock since they looked): load incrementally instead of
        # waiting. Rolled back to its savepoint, nothing was set aside.
        return None
    if bulk is not None and bulk.index_h3:
        bulk.tally = TallyProcess()  # started once the set-aside is kept
    return bulk


def _set_aside(cur: psycopg.Cursor[Any]) -> BulkLoad | None:
    bulk = BulkLoad()
    cur.execute("SELECT current_setting('lock_timeout') AS timeout")
    timeout = str(_one(cur)["timeout"])
    with cur.connection.transaction() as savepoint:
        cur.execute("SET LOCAL lock_timeout = '1s'")
        cur.execute("LOCK TABLE facilities IN ACCESS EXCLUSIVE MODE")
        # a concurrent load may have committed rows while we waited: then back out, which
        # (rolling back to the savepoint) also releases the lock
        if not _empty(cur):
            raise psycopg.Rollback(savepoint)
        bulk.index_h3 = _set_h3_aside(cur)
        cur.execute("SELECT set_config('lock_timeout', %(t)s, true)", {"t": timeout})
        cur.execute(_SECONDARY_INDEXES)
        for index in [_dict(r) for r in cur.fetchall()]:
            name = sql.Identifier(str(index["schema"]), str(index["name"]))
            cur.execute(sql.SQL("DROP INDEX {}").format(name))
            bulk.indexes.append(str(index["definition"]))
        # unique constraints too (not the primary key: the foreign keys of other tables hang
        # on it); rows are COPYed in, so nothing needs them as ON CONFLICT arbiters meanwhile
        cur.execute(_UNIQUE_CONSTRAINTS)
        for constraint in [_dict(r) for r in cur.fetchall()]:
            name = sql.Identifier(str(constraint["name"]))
            cur.execute(sql.SQL("ALTER TABLE facilities DROP CONSTRAINT {}").format(name))
            bulk.constraints.append((str(constraint["name"]), str(constraint["definition"])))
        # the index builds sort in memory when they can (and the H3 counts are summed there)
        cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
        cur.execute("SET LOCAL work_mem = '256MB'")
        return bulk
    return None


def _set_h3_aside(cur: psycopg.Cursor[Any]) -> bool:
    """With the H3 tables empty, the load counts its cells itself (`BulkLoad.tally`).

    The insert trigger would queue every new row in h3_pending, and sync_cells read them
    back afterwards to count their cells (measured: 23 s for 200,000 rows after the load).
    With nothing queued and no counts stored (as whenever facilities is empty and every change
    has been synced) and facilities locked, nothing else writes them meanwhile: the batches
    count their cells as they are built, and the counts are written once at the end. Otherwise
    the trigger stays and the queue merges with what was queued.
    """
    cur.execute(_H3_STATE, {"trigger": _H3_INSERT_TRIGGER})
    state = _one(cur)
    if state["enabled"] != "O" or not state["empty"]:
        return False
    # readers of the (empty) counts are waited for as briefly as those of facilities
    cur.execute("LOCK TABLE h3_counts IN ACCESS EXCLUSIVE MODE")
    cur.execute(
        sql.SQL("ALTER TABLE facilities DISABLE TRIGGER {}").format(
            sql.Identifier(_H3_INSERT_TRIGGER)
        )
    )
    return True


def end_bulk(cur: psycopg.Cursor[Any], bulk: BulkLoad | None) -> None:
    """Put back what `begin_bulk` set aside: the indexes, built once, and the H3 trigger.

    A load that wrote its H3 cells sums its staged counts into h3_counts first.
    """
    if bulk is None:
        return
    for name, definition in bulk.constraints:
        cur.execute(
            sql.SQL("ALTER TABLE facilities ADD CONSTRAINT {} {}").format(
                sql.Identifier(name),
                sql.SQL(definition),
            )
        )
    for definition in bulk.indexes:
        cur.execute(sql.SQL(definition))
    if bulk.tally is not None:
        counted = bulk.tally.result()
        if len(counted):
            counts = Batch()
            counts.add("h3_counts", counts_table(counted))
            send(cur, counts)
        cur.execute(
            sql.SQL("ALTER TABLE facilities ENABLE TRIGGER {}").format(
                sql.Identifier(_H3_INSERT_TRIGGER)
            )
        )


def _empty(cur: psycopg.Cursor[Any]) -> bool:
    cur.execute("SELECT NOT EXISTS (SELECT 1 FROM facilities) AS empty")
    return bool(_one(cur)["empty"])


def _dict(row: Any) -> dict[str, Any]:
    if isinstance(row, dict):
        return row
    return dict(row._asdict()) if hasattr(row, "_asdict") else dict(row)


def _one(cur: psycopg.Cursor[Any]) -> dict[str, Any]:
    row = cur.fetchone()
    assert row is not None
    return _dict(row)


def upsert(
    cur: psycopg.Cursor[Any], source: str, *, full: bool = False, reason: str | None = None
) -> LoadCounts:
    """Upsert everything staged (with `stage`) for `source`; `full` marks the missing removed."""
    counts = upsert_staged(cur, source)
    counts.removed = finish(cur, source, full=full, reason=reason)
    return counts


def load_records(
    conn: psycopg.Connection[Any], records: pd.DataFrame, source: str, *, full: bool = False
) -> LoadCounts:
    """Stage and upsert canonical records in one transaction: all or nothing."""
    from psycopg.rows import dict_row

    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        begin(cur)
        stage(cur, records)
        return upsert(cur, source, full=full)
