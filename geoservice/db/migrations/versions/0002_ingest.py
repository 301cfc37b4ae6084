"""ingest: no index on facilities.h3_15 — no query reads it, and every load paid for it.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS facilities_h3_idx")


def downgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS facilities_h3_idx ON facilities (h3_15)")
