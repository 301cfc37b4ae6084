"""facilities: the geography GiST index goes; nearest orders by the geometry index.

geoservice.query.nearest fetched candidates in the geography index's sphere order. It now
fetches them in the geometry index's lon/lat order (the index boxes and tiles use) and bounds
the unfetched ones' ellipsoidal distance from it (that module's docstring). The geography index
served nothing else, and was the costliest to build: a first load of 200,000 facilities spent
0.72 s of its 1.4 s of index builds on it (PostGIS builds a geography GiST unsorted), and every
facility written kept it up to date.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS facilities_geog_idx")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS facilities_geog_idx ON facilities"
        " USING gist ((geom::geography))"
    )
