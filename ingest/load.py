"""The load step: COPY canonical facility records into a staging table, then a set-based upsert.

Everything before this is pure (readers → validate → transform); this is the only step that
writes, and it writes inside the caller's transaction so a failure leaves nothing behind.
Records arrive in chunks (ids already unique in the file): each chunk is COPYed into the
(temporary) staging table and upserted with one INSERT … ON CONFLICT that skips unchanged rows
by their content hash; the first load of a source COPYs straight into the table instead.
``finish`` then marks what a full load no longer lists as removed.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import shapely
from psycopg import sql

#: The canonical record columns every reader/transform produces, in COPY order.
RECORD_COLUMNS = (
    "id",
    "source_id",
    "layer",
    "name",
    "name_en",
    "address",
    "phone",
    "website",
    "opening_hours",
    "opening_hours_raw",
    "accessible",
    "status",
    "status_reason",
    "attributes",
    "lon",
    "lat",
    "footprint",
    "h3_15",
    "verified_at",
)

#: COPY column order: the record columns, where each row came from, its content hash
STAGING_COLUMNS = (*RECORD_COLUMNS, "row_no", "content_hash")

#: the stored fields whose change makes a row "updated"
HASHED_COLUMNS = (
    "layer", "name", "name_en", "address", "phone", "website", "opening_hours",
    "opening_hours_raw", "accessible", "status", "status_reason", "attributes", "lon", "lat",
    "footprint", "verified_at",
)  # fmt: skip

_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS facility_staging (
    id text NOT NULL,
    source_id text NOT NULL,
    layer text NOT NULL,
    name text NOT NULL,
    name_en text,
    address text,
    phone text,
    website text,
    opening_hours text,
    opening_hours_raw text,
    accessible boolean,
    status text NOT NULL,
    status_reason text,
    attributes jsonb NOT NULL,
    lon double precision NOT NULL,
    lat double precision NOT NULL,
    footprint text,
    h3_15 bigint NOT NULL,
    verified_at timestamptz,
    row_no bigint,
    content_hash text
) ON COMMIT DROP;
-- every id the file lists (loaded or rejected): what --full must not mark removed
CREATE TEMP TABLE IF NOT EXISTS facility_seen (source_id text NOT NULL) ON COMMIT DROP
"""

# Unchanged rows are filtered out by their content hash (computed client-side, column-wise:
# `content_hashes`) before the INSERT: ON CONFLICT DO UPDATE would otherwise lock (and so
# rewrite) every existing row even when its WHERE is false. Rows go in id order, which keeps
# the primary-key B-tree inserts local.
_UPSERT = """
WITH changed AS (
    SELECT s.*
    FROM facility_staging s
    LEFT JOIN facilities f ON f.source = %(source)s AND f.source_id = s.source_id
    WHERE f.content_hash IS DISTINCT FROM s.content_hash
), written AS (
    INSERT INTO facilities AS f (
        id, layer, name, name_en, address, phone, website, opening_hours, opening_hours_raw,
        accessible, status, status_reason, source, source_id, attributes, geom, footprint,
        h3_15, content_hash, verified_at
    )
    SELECT st.id, st.layer, st.name, st.name_en,
           st.address, st.phone, st.website, st.opening_hours, st.opening_hours_raw,
           st.accessible, st.status, st.status_reason, %(source)s, st.source_id, st.attributes,
           ST_SetSRID(ST_MakePoint(st.lon, st.lat), 4326),
           CASE WHEN st.footprint IS NULL THEN NULL
                ELSE ST_SetSRID(ST_GeomFromEWKB(decode(st.footprint, 'hex')), 4326) END,
           st.h3_15, st.content_hash, st.verified_at
    FROM changed st
    ORDER BY st.id
    ON CONFLICT (source, source_id) DO UPDATE SET
        layer = EXCLUDED.layer, name = EXCLUDED.name, name_en = EXCLUDED.name_en,
        address = EXCLUDED.address, phone = EXCLUDED.phone, website = EXCLUDED.website,
        opening_hours = EXCLUDED.opening_hours, opening_hours_raw = EXCLUDED.opening_hours_raw,
        accessible = EXCLUDED.accessible, status = EXCLUDED.status,
        status_reason = EXCLUDED.status_reason, attributes = EXCLUDED.attributes,
        geom = EXCLUDED.geom, footprint = EXCLUDED.footprint, h3_15 = EXCLUDED.h3_15,
        content_hash = EXCLUDED.content_hash, verified_at = EXCLUDED.verified_at,
        updated_at = now()
    WHERE f.content_hash IS DISTINCT FROM EXCLUDED.content_hash
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated
FROM written
"""

_MARK_REMOVED = """
UPDATE facilities f
SET status = 'removed', status_reason = %(reason)s, updated_at = now(),
    content_hash = md5(f.content_hash || ':removed')
WHERE f.source = %(source)s AND f.status <> 'removed'
  AND NOT EXISTS (SELECT 1 FROM facility_seen r WHERE r.source_id = f.source_id)
"""

#: columns COPYed straight into facilities when a source is loaded for the first time
_NEW_COLUMNS = (
    "id", "layer", "name", "name_en", "address", "phone", "website", "opening_hours",
    "opening_hours_raw", "accessible", "status", "status_reason", "source", "source_id",
    "attributes", "geom", "footprint", "h3_15", "content_hash", "verified_at",
)  # fmt: skip

#: a load of at least this many rows, more than the table holds, is a bulk load
BULK_LOAD_MIN_ROWS = 50_000

_SECONDARY_INDEXES = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i
WHERE i.indrelid = 'facilities'::regclass
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
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
    prefix = f"{source}\x1f".encode()
    digests = b"".join(
        hashlib.blake2b(prefix + sid.encode(), digest_size=10).digest() for sid in source_ids
    )
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
    frame = records.loc[:, list(HASHED_COLUMNS)].copy()
    frame["lon"] = frame["lon"].astype(np.float64).round(8)
    frame["lat"] = frame["lat"].astype(np.float64).round(8)
    frame["accessible"] = frame["accessible"].map({True: "t", False: "f"}).astype(object)
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    hexed = hashes.astype(">u8").tobytes().hex().encode()
    return np.frombuffer(hexed, dtype="S16").astype(str)


def _csv_bytes(records: pd.DataFrame, columns: Sequence[str] = STAGING_COLUMNS) -> bytes:
    """Records as CSV for COPY: text always quoted, NULL as an unquoted empty field."""
    frame = records.loc[:, [c for c in columns if c in records.columns]]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    buffer = io.BytesIO()
    pa_csv.write_csv(
        table, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    )
    return buffer.getvalue()


def begin(cur: psycopg.Cursor[Any], source: str | None = None) -> bool:
    """Create the run's staging tables; lock `source` against a concurrent load of it.

    Returns whether the source has no facilities yet (its rows can then be COPYed straight in).
    """
    cur.execute(_STAGING_DDL)
    # index builds after a bulk load sort in memory when they can
    cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
    if source is None:
        return False
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%(s)s)::bigint)", {"s": f"ingest:{source}"})
    cur.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM facilities WHERE source = %(s)s) AS fresh", {"s": source}
    )
    return bool(_one(cur)["fresh"])


def stage(cur: psycopg.Cursor[Any], records: pd.DataFrame) -> int:
    """COPY records (RECORD_COLUMNS, optionally row_no) into the transaction's staging table."""
    if records.empty:
        return 0
    if "content_hash" not in records.columns:
        records = records.assign(content_hash=content_hashes(records))
    if "row_no" not in records.columns:
        records = records.assign(row_no=np.arange(1, len(records) + 1))
    columns = [c for c in STAGING_COLUMNS if c in records.columns]
    query = sql.SQL("COPY facility_staging ({}) FROM STDIN (FORMAT csv)").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    with cur.copy(query) as copy:
        copy.write(_csv_bytes(records))
    return len(records)


def mark_seen(cur: psycopg.Cursor[Any], source_ids: Sequence[str]) -> None:
    """Remember ids the file lists (loaded or rejected): --full must not mark them removed."""
    if not source_ids:
        return
    with cur.copy("COPY facility_seen (source_id) FROM STDIN") as copy:
        copy.write("".join(f"{_copy_text(s)}\n" for s in source_ids))


def _copy_text(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )


def insert_new(cur: psycopg.Cursor[Any], records: pd.DataFrame, source: str) -> LoadCounts:
    """COPY records of a source that has no facilities yet straight into the table."""
    if records.empty:
        return LoadCounts()
    frame = records.assign(
        source=source,
        geom=point_ewkb(records["lon"].to_numpy(), records["lat"].to_numpy()),
    )
    if "content_hash" not in frame.columns:
        frame["content_hash"] = content_hashes(frame)
    query = sql.SQL("COPY facilities ({}) FROM STDIN (FORMAT csv)").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in _NEW_COLUMNS)
    )
    with cur.copy(query) as copy:
        copy.write(_csv_bytes(frame, _NEW_COLUMNS))
    return LoadCounts(staged=len(frame), inserted=len(frame))


def point_ewkb(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """WGS 84 points as hex EWKB (what PostGIS reads from COPY text)."""
    geoms = shapely.set_srid(shapely.points(lon, lat), 4326)
    return np.asarray(shapely.to_wkb(geoms, hex=True, include_srid=True), dtype=object)


def _upsert_staged(cur: psycopg.Cursor[Any], source: str) -> LoadCounts:
    cur.execute("SELECT count(*) AS n FROM facility_staging")
    staged = int(_one(cur)["n"])
    cur.execute(_UPSERT, {"source": source})
    row = _one(cur)
    counts = LoadCounts(staged=staged, inserted=int(row["inserted"]), updated=int(row["updated"]))
    counts.unchanged = staged - counts.inserted - counts.updated
    return counts


def load_chunk(cur: psycopg.Cursor[Any], records: pd.DataFrame, source: str) -> LoadCounts:
    """Stage one chunk (ids already unique in the file) and upsert it."""
    cur.execute("TRUNCATE facility_staging")
    stage(cur, records)
    return _upsert_staged(cur, source)


def finish(cur: psycopg.Cursor[Any], source: str, *, full: bool, reason: str | None = None) -> int:
    """With `full`, mark the source's facilities this file did not list as removed."""
    if not full:
        return 0
    cur.execute(
        _MARK_REMOVED,
        {"source": source, "reason": reason or f"no longer in the full load of {source}"},
    )
    return cur.rowcount


def drop_secondary_indexes(cur: psycopg.Cursor[Any], expected_rows: int | None) -> list[str]:
    """For a bulk load, drop the facilities table's secondary indexes; their definitions back.

    PostgreSQL's advice for populating a table: building indexes once afterwards (sorted
    builds) is far cheaper than updating them row by row. The table stays locked until commit,
    which only an initial or bulk load (more new rows than the table holds) pays.
    """
    if expected_rows is None or expected_rows < BULK_LOAD_MIN_ROWS:
        return []
    cur.execute("SELECT count(*) AS n FROM facilities")
    if int(_one(cur)["n"]) >= expected_rows:
        return []
    cur.execute(_SECONDARY_INDEXES)
    indexes = [_dict(r) for r in cur.fetchall()]
    for index in indexes:
        cur.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(str(index["name"]))))
    return [str(index["definition"]) for index in indexes]


def create_indexes(cur: psycopg.Cursor[Any], definitions: Sequence[str]) -> None:
    """Re-create indexes from their catalogue definitions (pg_get_indexdef)."""
    for definition in definitions:
        cur.execute(sql.SQL(definition))


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
    cur.execute("INSERT INTO facility_seen (source_id) SELECT source_id FROM facility_staging")
    counts = _upsert_staged(cur, source)
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
