"""H3: counts kept for resolutions 0-10 only; the queue says what each facility was counted as.

From resolution 11 on a cell holds about one facility even in a dense district: h3_counts held
a row per facility and resolution there (4.7 rows a facility over the 16 resolutions), and
facility_h3 every facility's 16 cells, so that a change could be taken out of the cells it was
counted in. A first load of 200,000 facilities spent more time writing, summing and indexing
them than loading the facilities. Now geoservice.query.h3 buckets resolutions 11-15 from the
facilities in the requested box (the hexagon limit keeps it small), h3_counts keeps 0-10, and
facility_h3 goes: the H3 triggers record in h3_pending what the counts count for a facility
(its layer and position when last counted, NULL when not counted), once, on its first change
since it was last synced. The sync (geoservice.query.h3sync) takes it out of the cells of that
position and counts it where it is now.

Upgrading: facilities still queued are taken out of the counts here (their counted cells are
in facility_h3 until it is dropped), so each is queued as not counted and counted afresh.
Downgrading: the counts are emptied and every facility queued, as migration 0003 started.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE h3_pending ADD COLUMN old_layer text, ADD COLUMN old_geom geometry(Point, 4326);

-- queued facilities counted before: out of their counted cells now (0-10; the finer go)
WITH counted AS (
    SELECT r AS resolution, h.layer, h.cells[r + 1] AS cell, count(*) AS n
    FROM facility_h3 h JOIN h3_pending p ON p.facility_id = h.facility_id,
         generate_series(0, 10) AS r
    WHERE h.live
    GROUP BY 1, 2, 3
)
UPDATE h3_counts c SET count = c.count - counted.n
FROM counted
WHERE c.resolution = counted.resolution AND c.layer = counted.layer AND c.cell = counted.cell;
DELETE FROM h3_counts WHERE count <= 0 OR resolution > 10;
DROP TABLE facility_h3;

CREATE OR REPLACE FUNCTION h3_queue_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- not counted yet; queued already: counted (or not) as recorded then
    INSERT INTO h3_pending (facility_id) SELECT id FROM new_rows
    ON CONFLICT (facility_id) DO UPDATE SET changed = nextval('h3_pending_seq');
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION h3_queue_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO h3_pending (facility_id, old_layer, old_geom)
    SELECT id,
           CASE WHEN status <> 'removed' THEN layer END,
           CASE WHEN status <> 'removed' THEN geom END
    FROM old_rows
    ON CONFLICT (facility_id) DO UPDATE SET changed = nextval('h3_pending_seq');
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION h3_queue_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO h3_pending (facility_id, old_layer, old_geom)
    SELECT n.id,
           CASE WHEN o.status <> 'removed' THEN o.layer END,
           CASE WHEN o.status <> 'removed' THEN o.geom END
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE o.geom IS DISTINCT FROM n.geom OR o.layer IS DISTINCT FROM n.layer
       OR (o.status = 'removed') IS DISTINCT FROM (n.status = 'removed')
    ON CONFLICT (facility_id) DO UPDATE SET changed = nextval('h3_pending_seq');
    RETURN NULL;
END
$$;
"""

DOWNGRADE = """
CREATE OR REPLACE FUNCTION h3_queue_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO h3_pending (facility_id) SELECT id FROM new_rows
    ON CONFLICT (facility_id) DO UPDATE SET changed = nextval('h3_pending_seq');
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION h3_queue_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO h3_pending (facility_id) SELECT id FROM old_rows
    ON CONFLICT (facility_id) DO UPDATE SET changed = nextval('h3_pending_seq');
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION h3_queue_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO h3_pending (facility_id)
    SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE o.geom IS DISTINCT FROM n.geom OR o.layer IS DISTINCT FROM n.layer
       OR (o.status = 'removed') IS DISTINCT FROM (n.status = 'removed')
    ON CONFLICT (facility_id) DO UPDATE SET changed = nextval('h3_pending_seq');
    RETURN NULL;
END
$$;

CREATE TABLE facility_h3 (
    facility_id text PRIMARY KEY,
    layer text NOT NULL,
    live boolean NOT NULL,
    cells bigint[] NOT NULL
);
TRUNCATE h3_counts, h3_pending;
ALTER TABLE h3_pending DROP COLUMN old_layer, DROP COLUMN old_geom;
INSERT INTO h3_pending (facility_id) SELECT id FROM facilities;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
