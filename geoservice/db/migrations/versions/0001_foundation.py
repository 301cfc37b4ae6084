"""Foundation: PostGIS, facilities, ingest_runs.

Revision ID: 0001
Revises:
"""

from alembic import op

from geoservice.db.models import facilities, ingest_runs

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    bind = op.get_bind()
    facilities.create(bind)
    ingest_runs.create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    ingest_runs.drop(bind)
    facilities.drop(bind)
