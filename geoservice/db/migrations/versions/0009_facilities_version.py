"""facilities_version: a number that changes whenever facilities change (the tile cache's check).

One row, bumped by a statement-level trigger after every INSERT, UPDATE, DELETE or TRUNCATE on
facilities, in the writer's own transaction: a reader sees the new number exactly when it sees
the new rows. ``geoservice.query.tiles`` serves a tile it built only while the number (and the
tile's sensors and opening states) is unchanged, so checking a kept tile reads one row instead
of every facility in it. One row update per statement (not per row) costs a load nothing
measurable; two loads at once wait for each other at their first statement (they already do on
the facilities they both write).

Revision ID: 0009
Revises: 0008

Frozen history: the table is written out as it was created, never imported from the models.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TRIGGER = """
INSERT INTO facilities_version (id, n) VALUES (true, 0);
CREATE FUNCTION facilities_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE facilities_version SET n = n + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER facilities_version_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON facilities FOR EACH STATEMENT EXECUTE FUNCTION facilities_version_bump();
"""
DROP_TRIGGER = """
DROP TRIGGER IF EXISTS facilities_version_bump ON facilities;
DROP FUNCTION IF EXISTS facilities_version_bump();
"""


def upgrade() -> None:
    op.create_table(
        "facilities_version",
        sa.Column("id", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("n", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name="facilities_version_pkey"),
        sa.CheckConstraint("id", name="facilities_version_one_row"),
    )
    op.execute(TRIGGER)


def downgrade() -> None:
    op.execute(DROP_TRIGGER)
    op.drop_table("facilities_version")
