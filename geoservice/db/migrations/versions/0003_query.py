"""query: exact H3 cells for every resolution, and per-cell counts kept up to date.

Revision ID: 0003
Revises: 0002

H3 cells do not nest exactly: a cell's resolution-15 descendants do not tile the cell, so for
about 6 % of points the parent of the resolution-15 cell differs from ``latlng_to_cell`` at a
coarser resolution. The contract promises ``latlng_to_cell`` at every resolution, so each
facility's 16 cells are computed by h3 itself (geoservice.query.h3.sync_cells) and the counts per
(resolution, layer, cell) are kept in ``h3_counts``, which answers any resolution without
touching geometry. A trigger queues every changed facility in ``h3_pending``.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE SEQUENCE h3_pending_seq;

CREATE TABLE h3_pending (
    facility_id text PRIMARY KEY,
    changed bigint NOT NULL DEFAULT nextval('h3_pending_seq')
);

-- what h3_counts currently counts for each facility (cells[r + 1] = cell at resolution r)
CREATE TABLE facility_h3 (
    facility_id text PRIMARY KEY,
    layer text NOT NULL,
    live boolean NOT NULL,
    cells bigint[] NOT NULL
);

CREATE TABLE h3_counts (
    resolution smallint NOT NULL,
    layer text NOT NULL,
    cell bigint NOT NULL,
    count integer NOT NULL,
    PRIMARY KEY (resolution, layer, cell)
);

-- Statement-level triggers with transition tables: one set-based insert per statement, so a
-- bulk load of a million rows queues them in one go instead of a million trigger calls.
CREATE FUNCTION h3_queue_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO h3_pending (facility_id) SELECT id FROM new_rows
    ON CONFLICT (facility_id) DO UPDATE SET changed = nextval('h3_pending_seq');
    RETURN NULL;
END
$$;

CREATE FUNCTION h3_queue_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO h3_pending (facility_id) SELECT id FROM old_rows
    ON CONFLICT (facility_id) DO UPDATE SET changed = nextval('h3_pending_seq');
    RETURN NULL;
END
$$;

CREATE FUNCTION h3_queue_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO h3_pending (facility_id)
    SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE o.geom IS DISTINCT FROM n.geom OR o.layer IS DISTINCT FROM n.layer
       OR (o.status = 'removed') IS DISTINCT FROM (n.status = 'removed')
    ON CONFLICT (facility_id) DO UPDATE SET changed = nextval('h3_pending_seq');
    RETURN NULL;
END
$$;

CREATE TRIGGER facilities_h3_insert AFTER INSERT ON facilities
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION h3_queue_inserted();

CREATE TRIGGER facilities_h3_delete AFTER DELETE ON facilities
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION h3_queue_deleted();

CREATE TRIGGER facilities_h3_update AFTER UPDATE ON facilities
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION h3_queue_updated();

INSERT INTO h3_pending (facility_id) SELECT id FROM facilities;
"""

DOWNGRADE = """
DROP TRIGGER IF EXISTS facilities_h3_update ON facilities;
DROP TRIGGER IF EXISTS facilities_h3_delete ON facilities;
DROP TRIGGER IF EXISTS facilities_h3_insert ON facilities;
DROP FUNCTION IF EXISTS h3_queue_updated();
DROP FUNCTION IF EXISTS h3_queue_deleted();
DROP FUNCTION IF EXISTS h3_queue_inserted();
DROP TABLE IF EXISTS h3_counts;
DROP TABLE IF EXISTS facility_h3;
DROP TABLE IF EXISTS h3_pending;
DROP SEQUENCE IF EXISTS h3_pending_seq;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
