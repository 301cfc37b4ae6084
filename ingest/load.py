"""The load step: COPY canonical facility records into a staging table, then one set-based upsert.

Everything before this is pure (readers → validate → transform); this is the only step that
writes, and it writes inside the caller's transaction so a failure leaves nothing behind.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg

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
    verified_at timestamptz
) ON COMMIT DROP
"""

_UPSERT = """
WITH staged AS (
    SELECT s.*,
           md5(jsonb_build_array(
               s.layer, s.name, s.name_en, s.address, s.phone, s.website, s.opening_hours,
               s.opening_hours_raw, s.accessible, s.status, s.status_reason, s.attributes,
               round(s.lon::numeric, 8), round(s.lat::numeric, 8), s.footprint, s.verified_at
           )::text) AS content_hash
    FROM facility_staging s
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
    FROM staged st
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
  AND NOT EXISTS (SELECT 1 FROM facility_staging s WHERE s.source_id = f.source_id)
"""


def facility_id(source: str, source_id: str) -> str:
    """The facility's public id: URL-safe, stable for the same (source, source_id)."""
    digest = hashlib.blake2b(f"{source}\x1f{source_id}".encode(), digest_size=10).digest()
    return base64.b32encode(digest).decode().lower()


@dataclass
class LoadCounts:
    """What one load changed."""

    staged: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0


def _rows(records: pd.DataFrame) -> Any:
    frame = records.loc[:, list(RECORD_COLUMNS)].astype(object)
    frame = frame.where(frame.notna(), None)
    return frame.itertuples(index=False, name=None)


def stage(cur: psycopg.Cursor[Any], records: pd.DataFrame) -> int:
    """COPY records (RECORD_COLUMNS) into the transaction's staging table."""
    cur.execute(_STAGING_DDL)
    columns = ", ".join(RECORD_COLUMNS)
    with cur.copy(f"COPY facility_staging ({columns}) FROM STDIN") as copy:
        for row in _rows(records):
            copy.write_row(row)
    return len(records)


def upsert(
    cur: psycopg.Cursor[Any], source: str, *, full: bool = False, reason: str | None = None
) -> LoadCounts:
    """Upsert the staged records of `source`; with `full`, mark its missing facilities removed."""
    cur.execute("SELECT count(*) AS n FROM facility_staging")
    staged = int(_one(cur)["n"])
    cur.execute(_UPSERT, {"source": source})
    row = _one(cur)
    counts = LoadCounts(staged=staged, inserted=int(row["inserted"]), updated=int(row["updated"]))
    counts.unchanged = staged - counts.inserted - counts.updated
    if full:
        cur.execute(
            _MARK_REMOVED,
            {"source": source, "reason": reason or f"no longer in the full load of {source}"},
        )
        counts.removed = cur.rowcount
    return counts


def _one(cur: psycopg.Cursor[Any]) -> dict[str, Any]:
    row = cur.fetchone()
    assert row is not None
    return dict(row) if not isinstance(row, dict) else row


def load_records(
    conn: psycopg.Connection[Any], records: pd.DataFrame, source: str, *, full: bool = False
) -> LoadCounts:
    """Stage and upsert canonical records in one transaction: all or nothing."""
    with conn.transaction(), conn.cursor() as cur:
        stage(cur, records)
        return upsert(cur, source, full=full)
