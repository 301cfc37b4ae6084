"""Sensor ingestion in three steps around a COPY: begin (check, lock, stalls, stored seqs), the
service's COPY of the new readings straight into toilet_readings, end (the toilets' status).

Replaces ``toilet_ingest_many`` (0005), which parsed every reading out of one JSON document:
PostgreSQL's JSON parser and the row-by-row INSERT … SELECT cost four times what COPY costs.

Revision ID: 0006
Revises: 0005
"""

import importlib.util
from pathlib import Path
from typing import Any

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Called first in the writer's transaction with the group's posts, each
# {"device", "facility", "seq_min", "seq_max", "stalls": [{"id", "occupied", "at"}]}
# (two posts of one device never share a transaction). In order:
# 1. every device must still be live (the service caches identities): else the call fails
#    and the service retries the posts one by one, so only the revoked one is refused;
# 2. lock the toilets' status rows in id order: posts for one toilet (hence one device) are
#    stored one transaction at a time, and concurrent transactions never deadlock;
# 3. move each stall forward (only to a newer observation) and bound stalls per device;
# 4. return {"stored": {device: [seq, …]}} — the seqs in each post's range already stored
#    (one index range scan per post over the partitions within the horizon) — and
#    {"cleaned": {facility: timestamp}}, the toilets' last cleaning. The lock makes both
#    stable until the commit: the service COPYs exactly the readings not stored yet.
BEGIN = r"""
CREATE OR REPLACE FUNCTION toilet_ingest_begin(
    p_posts jsonb, p_max_stalls integer, p_horizon_s integer
) RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    -- a stored (device, seq) can only be older than this if it is older than the horizon
    v_since timestamptz := now() - make_interval(secs => p_horizon_s + 86400);
    v_until timestamptz := now() + interval '1 day';
    v_stored jsonb;
    v_cleaned jsonb;
BEGIN
    IF EXISTS (
        SELECT 1 FROM jsonb_array_elements(p_posts) AS p(e)
         WHERE NOT EXISTS (
               SELECT 1 FROM toilet_devices d
                WHERE d.id = (p.e->>'device')::bigint AND d.facility_id = p.e->>'facility'
                  AND d.revoked_at IS NULL))
    THEN
        RAISE EXCEPTION 'a device of this call is revoked'
              USING ERRCODE = 'insufficient_privilege';
    END IF;

    INSERT INTO toilet_status (facility_id)
    SELECT DISTINCT p.e->>'facility' FROM jsonb_array_elements(p_posts) AS p(e) ORDER BY 1
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM toilet_status
      WHERE facility_id IN (SELECT p.e->>'facility' FROM jsonb_array_elements(p_posts) AS p(e))
      ORDER BY facility_id FOR UPDATE;

    INSERT INTO toilet_stalls AS t (device_id, stall_id, facility_id, occupied, observed_at)
    SELECT (p.e->>'device')::bigint, s.id, p.e->>'facility', s.occupied, s.at
      FROM jsonb_array_elements(p_posts) AS p(e),
           jsonb_to_recordset(p.e->'stalls') AS s(id text, occupied boolean, at timestamptz)
    ON CONFLICT (device_id, stall_id) DO UPDATE
       SET occupied = excluded.occupied, observed_at = excluded.observed_at
     WHERE t.observed_at IS NULL OR t.observed_at < excluded.observed_at;
    IF EXISTS (
        SELECT 1 FROM toilet_stalls ts
         WHERE ts.device_id IN (
               SELECT (p.e->>'device')::bigint FROM jsonb_array_elements(p_posts) AS p(e))
         GROUP BY ts.device_id HAVING count(*) > p_max_stalls)
    THEN
        RAISE EXCEPTION 'a device would have more than % stalls', p_max_stalls
              USING ERRCODE = 'program_limit_exceeded';
    END IF;

    -- per post, one index range scan (OFFSET 0 keeps it a per-post scan: the planner
    -- cannot know how few posts there are)
    SELECT coalesce(jsonb_object_agg(s.device_id::text, s.seqs), '{}'::jsonb) INTO v_stored
      FROM (SELECT p.device_id, jsonb_agg(t.seq) AS seqs
              FROM (SELECT (e->>'device')::bigint AS device_id, (e->>'seq_min')::bigint AS lo,
                           (e->>'seq_max')::bigint AS hi
                      FROM jsonb_array_elements(p_posts) AS e) p
              CROSS JOIN LATERAL (
                   SELECT r.seq FROM toilet_readings r
                    WHERE r.device_id = p.device_id AND r.seq BETWEEN p.lo AND p.hi
                      AND r.observed_at >= v_since AND r.observed_at < v_until
                   OFFSET 0) t
             GROUP BY p.device_id) s;
    SELECT coalesce(jsonb_object_agg(st.facility_id, st.cleaned_at), '{}'::jsonb) INTO v_cleaned
      FROM toilet_status st
     WHERE st.cleaned_at IS NOT NULL
       AND st.facility_id IN (SELECT p.e->>'facility' FROM jsonb_array_elements(p_posts) AS p(e));
    RETURN jsonb_build_object('stored', v_stored, 'cleaned', v_cleaned);
END
$fn$;
"""

# Called last, after the COPY, with each post's
# {"facility", "people" (entries in the readings stored, observed after the last cleaning),
#  "newest", "nh3_ppm", "humidity_pct", "battery_pct" (the post's newest reading)}:
# updates each toilet's status from its stalls and its newest reading, never rewinding it.
END = r"""
CREATE OR REPLACE FUNCTION toilet_ingest_end(
    p_posts jsonb, p_nh3_limit double precision, p_busy_limit bigint
) RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    v_moved integer;
BEGIN
    WITH p AS (
        SELECT e->>'facility' AS facility_id, e FROM jsonb_array_elements(p_posts) AS t(e)
    ), people AS (
        SELECT p.facility_id, sum((p.e->>'people')::bigint) AS people
          FROM p GROUP BY p.facility_id
    ), newest AS (
        SELECT DISTINCT ON (p.facility_id) p.facility_id,
               (p.e->>'newest')::timestamptz AS at, (p.e->>'nh3_ppm')::double precision AS nh3,
               (p.e->>'humidity_pct')::double precision AS humidity,
               (p.e->>'battery_pct')::double precision AS battery
          FROM p ORDER BY p.facility_id, (p.e->>'newest')::timestamptz DESC
    ), stalls AS (
        SELECT ts.facility_id, count(*) AS total,
               count(*) FILTER (WHERE ts.occupied IS FALSE) AS free
          FROM toilet_stalls ts JOIN toilet_devices d ON d.id = ts.device_id
         WHERE d.revoked_at IS NULL AND ts.facility_id IN (SELECT facility_id FROM p)
         GROUP BY ts.facility_id
    )
    UPDATE toilet_status AS s SET
        stalls_total = coalesce(a.total, 0),
        stalls_free = coalesce(a.free, 0),
        people_since_clean = s.people_since_clean + coalesce(pe.people, 0),
        nh3_ppm = CASE WHEN n.at > coalesce(s.observed_at, '-infinity')
                       THEN coalesce(n.nh3, s.nh3_ppm) ELSE s.nh3_ppm END,
        humidity_pct = CASE WHEN n.at > coalesce(s.observed_at, '-infinity')
                            THEN coalesce(n.humidity, s.humidity_pct) ELSE s.humidity_pct END,
        battery_pct = CASE WHEN n.at > coalesce(s.observed_at, '-infinity')
                           THEN coalesce(n.battery, s.battery_pct) ELSE s.battery_pct END,
        observed_at = greatest(s.observed_at, n.at),
        last_seen = greatest(s.last_seen, now()),
        nh3_high_since = CASE
            WHEN NOT n.at > coalesce(s.observed_at, '-infinity') OR n.nh3 IS NULL
                THEN s.nh3_high_since
            WHEN n.nh3 > p_nh3_limit THEN coalesce(s.nh3_high_since, n.at)
            ELSE NULL END,
        busy_since = CASE
            WHEN s.people_since_clean + coalesce(pe.people, 0) > p_busy_limit
                THEN coalesce(s.busy_since, now())
            ELSE s.busy_since END
      FROM newest n LEFT JOIN people pe USING (facility_id)
           LEFT JOIN stalls a USING (facility_id)
     WHERE s.facility_id = n.facility_id;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    RETURN v_moved;
END
$fn$;
"""

SIGNATURES = (
    "toilet_ingest_begin(jsonb, integer, integer)",
    "toilet_ingest_end(jsonb, double precision, bigint)",
)


def _previous() -> Any:
    """The 0005 revision module (its function text and signature), loaded from beside this file.

    By path, not by package: the migrations may move, and history stays self-contained.
    """
    path = Path(__file__).with_name("0005_toilets.py")
    spec = importlib.util.spec_from_file_location("servicemap_migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute(BEGIN)
    op.execute(END)
    op.execute(f"DROP FUNCTION IF EXISTS {_previous().INGEST_MANY_SIGNATURE}")


def downgrade() -> None:
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.execute(_previous().INGEST_MANY)
