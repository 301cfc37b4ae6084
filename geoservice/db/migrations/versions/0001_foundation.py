"""Foundation: PostGIS, facilities, ingest_runs.

Revision ID: 0001
Revises:

Frozen history: the tables are written out as they were created, never imported from the
models (which describe today's schema; tests/geoservice/test_schema.py compares the two).
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.create_table(
        "facilities",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("layer", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("name_en", sa.Text()),
        sa.Column("address", sa.Text()),
        sa.Column("phone", sa.Text()),
        sa.Column("website", sa.Text()),
        sa.Column("opening_hours", sa.Text()),
        sa.Column("opening_hours_raw", sa.Text()),
        sa.Column("accessible", sa.Boolean()),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        sa.Column("status_reason", sa.Text()),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("attributes", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("geom", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
        sa.Column("footprint", Geometry("GEOMETRY", srid=4326, spatial_index=False)),
        sa.Column("h3_15", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("verified_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="facilities_pkey"),
        sa.UniqueConstraint("source", "source_id", name="facilities_source_key"),
        sa.CheckConstraint(
            "status IN ('active', 'temporarily_closed', 'removed')",
            name="facilities_status_check",
        ),
    )
    op.create_index("facilities_geom_idx", "facilities", ["geom"], postgresql_using="gist")
    op.create_index(
        "facilities_geog_idx",
        "facilities",
        [sa.text("(geom::geography)")],
        postgresql_using="gist",
    )
    op.create_index("facilities_layer_idx", "facilities", ["layer"])
    # an index on h3_15 was created here; 0002 drops it
    op.create_index("facilities_h3_idx", "facilities", ["h3_15"])

    op.create_table(
        "ingest_runs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.Text(), server_default="facilities", nullable=False),
        sa.Column("source", sa.Text()),
        sa.Column("layer", sa.Text()),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("file_sha256", sa.Text()),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("duration_s", sa.Float()),
        sa.Column("read", sa.Integer(), server_default="0", nullable=False),
        sa.Column("inserted", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated", sa.Integer(), server_default="0", nullable=False),
        sa.Column("unchanged", sa.Integer(), server_default="0", nullable=False),
        sa.Column("removed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rejected", sa.Integer(), server_default="0", nullable=False),
        sa.Column("warnings", sa.Integer(), server_default="0", nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("report", JSONB()),
        sa.PrimaryKeyConstraint("id", name="ingest_runs_pkey"),
    )


def downgrade() -> None:
    op.drop_table("ingest_runs")
    op.drop_table("facilities")
