"""Smart toilets: devices, stalls, partitioned readings, live status, ratings, staff, cleanings.

Revision ID: 0005
Revises: 0004

Frozen history: the tables are written out as they were created, never imported from the
models (which describe today's schema; tests/geoservice/test_schema.py compares the two).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = (
    "toilet_devices",
    "toilet_stalls",
    "toilet_readings",
    "toilet_status",
    "facility_ratings",
    "facility_rating_alerts",
    "staff_members",
    "toilet_cleanings",
)

# One partition per month, named toilet_readings_yYYYYmMM. Creating one takes a lock on the
# parent, so concurrent callers serialise on an advisory lock and re-check the catalogue.
ENSURE_PARTITION = r"""
CREATE OR REPLACE FUNCTION toilet_readings_ensure_partition(p_month date)
RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    v_start date := date_trunc('month', p_month)::date;
    v_name text := format('toilet_readings_y%sm%s', to_char(v_start, 'YYYY'),
                          to_char(v_start, 'MM'));
    -- bounds in UTC whatever the session's time zone
    v_from text := to_char(v_start, 'YYYY-MM-DD') || ' 00:00:00+00';
    v_to text := to_char((v_start + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00';
BEGIN
    IF to_regclass(v_name) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('toilet_readings_partition'));
    IF to_regclass(v_name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format(
        'CREATE TABLE %I PARTITION OF toilet_readings FOR VALUES FROM (%L) TO (%L)',
        v_name, v_from, v_to);
    RETURN true;
END
$fn$;
"""

# Called by migrations, `servicemap readings prune` and the service's start-up: the current
# month, the months ahead and the months back to the ingest horizon.
MAINTAIN = r"""
CREATE OR REPLACE FUNCTION toilet_readings_maintain(p_ahead integer DEFAULT 3,
                                                    p_behind integer DEFAULT 1)
RETURNS integer LANGUAGE plpgsql AS $fn$
DECLARE
    v_created integer := 0;
    v_month date;
BEGIN
    FOR i IN -p_behind..p_ahead LOOP
        v_month := (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i))::date;
        IF toilet_readings_ensure_partition(v_month) THEN
            v_created := v_created + 1;
        END IF;
    END LOOP;
    RETURN v_created;
END
$fn$;
"""

# Sensor posts are stored by one call per transaction, for several posts at once (the
# service's group commit, geoservice/toilets/writer.py). Each post in p_posts is
# {"device", "facility", "readings": [...validated readings...], "seq_min", "seq_max",
#  "stalls": [{"id", "occupied", "at"}] (the newest state of each stall in the post),
#  "newest", "nh3_ppm", "humidity_pct", "battery_pct" (the post's newest reading)};
# two posts of one device never share a call. Set-based, in order:
# 1. every device must still be live (the service caches identities): else the call fails
#    and the service retries the posts one by one, so only the revoked one is refused;
# 2. lock the toilets' status rows in id order: posts for one toilet (hence one device) are
#    stored one transaction at a time, and concurrent calls never deadlock;
# 3. move each stall forward (only to a newer observation) and bound stalls per device;
# 4. store the readings whose (device, seq) is not stored yet (one index range scan per
#    post over the partitions within the horizon), then update each toilet's status from
#    its stalls and its newest reading, never rewinding it.
# Returns the readings newly stored per post, in the order given.
INGEST_MANY = r"""
CREATE OR REPLACE FUNCTION toilet_ingest_many(
    p_posts jsonb, p_nh3_limit double precision, p_busy_limit bigint, p_max_stalls integer,
    p_horizon_s integer
) RETURNS integer[] LANGUAGE plpgsql AS $fn$
DECLARE
    -- a stored (device, seq) can only be older than this if it is older than the horizon
    v_since timestamptz := now() - make_interval(secs => p_horizon_s + 86400);
    v_until timestamptz := now() + interval '1 day';
    v_accepted integer[];
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

    WITH p AS (
        SELECT e, i, (e->>'device')::bigint AS device_id, e->>'facility' AS facility_id
          FROM jsonb_array_elements(p_posts) WITH ORDINALITY AS t(e, i)
    ), r AS (
        SELECT p.device_id, p.facility_id, x.seq, x.observed_at,
               coalesce(x.stalls, '[]'::jsonb) AS stalls, x.people_count, x.nh3_ppm,
               x.humidity_pct, x.battery_pct, x.consumables
          FROM p, jsonb_to_recordset(p.e->'readings') AS x(
               seq bigint, observed_at timestamptz, stalls jsonb, people_count integer,
               nh3_ppm double precision, humidity_pct double precision,
               battery_pct double precision, consumables jsonb)
    ), stored AS (
        -- per post, one index range scan (OFFSET 0 keeps it a per-post scan: the planner
        -- cannot know how few posts there are)
        SELECT s.device_id, s.seq
          FROM p CROSS JOIN LATERAL (
               SELECT t.device_id, t.seq FROM toilet_readings t
                WHERE t.device_id = p.device_id
                  AND t.seq BETWEEN (p.e->>'seq_min')::bigint AND (p.e->>'seq_max')::bigint
                  AND t.observed_at >= v_since AND t.observed_at < v_until
               OFFSET 0) AS s
    ), ins AS (
        INSERT INTO toilet_readings (device_id, seq, facility_id, observed_at, stalls,
                                     stalls_total, stalls_free, people_count, nh3_ppm,
                                     humidity_pct, battery_pct, consumables)
        SELECT r.device_id, r.seq, r.facility_id, r.observed_at, r.stalls,
               jsonb_array_length(r.stalls),
               jsonb_array_length(
                   jsonb_path_query_array(r.stalls, '$[*] ? (@.occupied == false)')),
               r.people_count, r.nh3_ppm, r.humidity_pct, r.battery_pct, r.consumables
          FROM r
         WHERE NOT EXISTS (SELECT 1 FROM stored s
                            WHERE s.device_id = r.device_id AND s.seq = r.seq)
        RETURNING device_id, facility_id, observed_at, people_count
    ), per_device AS (
        SELECT ins.device_id, count(*) AS n FROM ins GROUP BY ins.device_id
    ), people AS (
        -- entries observed after the toilet's last clean count towards use since it
        SELECT ins.facility_id, coalesce(sum(ins.people_count), 0) AS people
          FROM ins JOIN toilet_status st ON st.facility_id = ins.facility_id
         WHERE st.cleaned_at IS NULL OR ins.observed_at > st.cleaned_at
         GROUP BY ins.facility_id
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
    ), moved AS (
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
         WHERE s.facility_id = n.facility_id
        RETURNING 1
    )
    SELECT array_agg(coalesce(d.n, 0)::integer ORDER BY p.i)
      INTO v_accepted
      FROM p LEFT JOIN per_device d USING (device_id);
    RETURN v_accepted;
END
$fn$;
"""

INGEST_MANY_SIGNATURE = "toilet_ingest_many(jsonb, double precision, bigint, integer, integer)"


def upgrade() -> None:
    op.create_table(
        "toilet_devices",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("facility_id", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("stalls", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="toilet_devices_pkey"),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facilities.id"],
            name="toilet_devices_facility_id_fkey",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("token_hash", name="toilet_devices_token_hash_key"),
    )
    op.create_index("toilet_devices_facility_idx", "toilet_devices", ["facility_id"])

    op.create_table(
        "toilet_stalls",
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("stall_id", sa.Text(), nullable=False),
        sa.Column("facility_id", sa.Text(), nullable=False),
        sa.Column("occupied", sa.Boolean()),
        sa.Column("observed_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("device_id", "stall_id", name="toilet_stalls_pkey"),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["toilet_devices.id"],
            name="toilet_stalls_device_id_fkey",
            ondelete="CASCADE",
        ),
    )
    op.create_index("toilet_stalls_facility_idx", "toilet_stalls", ["facility_id"])

    op.create_table(
        "toilet_readings",
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("facility_id", sa.Text(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("stalls", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("stalls_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("stalls_free", sa.Integer(), server_default="0", nullable=False),
        sa.Column("people_count", sa.Integer()),
        sa.Column("nh3_ppm", sa.Float()),
        sa.Column("humidity_pct", sa.Float()),
        sa.Column("battery_pct", sa.Float()),
        sa.Column("consumables", JSONB()),
        postgresql_partition_by="RANGE (observed_at)",
    )
    op.create_index("toilet_readings_device_seq_idx", "toilet_readings", ["device_id", "seq"])

    op.create_table(
        "toilet_status",
        sa.Column("facility_id", sa.Text(), nullable=False),
        sa.Column("stalls_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("stalls_free", sa.Integer(), server_default="0", nullable=False),
        sa.Column("people_since_clean", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("nh3_ppm", sa.Float()),
        sa.Column("humidity_pct", sa.Float()),
        sa.Column("battery_pct", sa.Float()),
        sa.Column("observed_at", sa.DateTime(timezone=True)),
        sa.Column("last_seen", sa.DateTime(timezone=True)),
        sa.Column("nh3_high_since", sa.DateTime(timezone=True)),
        sa.Column("busy_since", sa.DateTime(timezone=True)),
        sa.Column("cleaned_at", sa.DateTime(timezone=True)),
        sa.Column("cleaned_by", sa.Text()),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("facility_id", name="toilet_status_pkey"),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facilities.id"],
            name="toilet_status_facility_id_fkey",
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "facility_ratings",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("facility_id", sa.Text(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("cleanliness", sa.Integer()),
        sa.Column("smell", sa.Integer()),
        sa.Column("supplies", sa.Integer()),
        sa.Column("tags", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("client_hash", sa.Text(), nullable=False),
        sa.Column("cookie_hash", sa.Text()),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="facility_ratings_pkey"),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facilities.id"],
            name="facility_ratings_facility_id_fkey",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("score BETWEEN 1 AND 5", name="facility_ratings_score_check"),
        sa.CheckConstraint(
            "(cleanliness IS NULL OR cleanliness BETWEEN 1 AND 5)"
            " AND (smell IS NULL OR smell BETWEEN 1 AND 5)"
            " AND (supplies IS NULL OR supplies BETWEEN 1 AND 5)",
            name="facility_ratings_subscores_check",
        ),
        sa.CheckConstraint(
            "comment IS NULL OR char_length(comment) <= 500",
            name="facility_ratings_comment_check",
        ),
    )
    op.create_index(
        "facility_ratings_facility_idx", "facility_ratings", ["facility_id", "created_at"]
    )
    op.create_index(
        "facility_ratings_client_idx", "facility_ratings", ["client_hash", "created_at"]
    )
    op.create_index(
        "facility_ratings_cookie_idx", "facility_ratings", ["cookie_hash", "created_at"]
    )
    op.create_index("facility_ratings_created_idx", "facility_ratings", ["created_at"])

    op.create_table(
        "facility_rating_alerts",
        sa.Column("facility_id", sa.Text(), nullable=False),
        sa.Column("low_since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("facility_id", name="facility_rating_alerts_pkey"),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facilities.id"],
            name="facility_rating_alerts_facility_id_fkey",
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "staff_members",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="staff_members_pkey"),
        sa.UniqueConstraint("name", name="staff_members_name_key"),
        sa.UniqueConstraint("token_hash", name="staff_members_token_hash_key"),
    )

    op.create_table(
        "toilet_cleanings",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("facility_id", sa.Text(), nullable=False),
        sa.Column("staff_name", sa.Text(), nullable=False),
        sa.Column(
            "cleaned_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("people_since_clean", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("closed_alerts", JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="toilet_cleanings_pkey"),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facilities.id"],
            name="toilet_cleanings_facility_id_fkey",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "toilet_cleanings_facility_idx", "toilet_cleanings", ["facility_id", "cleaned_at"]
    )

    op.execute(ENSURE_PARTITION)
    op.execute(MAINTAIN)
    op.execute(INGEST_MANY)
    op.execute("SELECT toilet_readings_maintain()")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {INGEST_MANY_SIGNATURE}")
    op.execute("DROP FUNCTION IF EXISTS toilet_readings_maintain(integer, integer)")
    op.execute("DROP FUNCTION IF EXISTS toilet_readings_ensure_partition(date)")
    for table in reversed(TABLES):
        op.drop_table(table)
