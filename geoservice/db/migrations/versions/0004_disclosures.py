"""disclosures: matters, documents, their links to facilities, and the effective-links view.

Revision ID: 0004
Revises: 0003

Frozen history: the tables are written out as they were created, never imported from the
models (which describe today's schema; tests/geoservice/test_schema.py compares the two).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: Every facility ↔ matter link with how it was made; manual links win over name matches,
#: name matches over rules, and a manual `exclude` removes the pair whatever made it.
#: No CTEs: a filter on facility_id or matter_id reaches every branch (index lookups).
FACILITY_MATTER_LINKS_VIEW = """
CREATE VIEW facility_matter_links AS
SELECT DISTINCT ON (c.facility_id, c.matter_id) c.facility_id, c.matter_id, c.method, c.score
FROM (
    SELECT f.id AS facility_id, ml.matter_id, 'manual'::text AS method, 1.0::float8 AS score,
           0 AS precedence
    FROM manual_links ml
    JOIN facilities f ON f.source = ml.source AND f.source_id = ml.source_id
    WHERE NOT ml.exclude AND f.status <> 'removed'
    UNION ALL
    SELECT l.facility_id, dm.matter_id, 'name_match'::text, max(l.score), 1
    FROM facility_document_links l
    JOIN document_matters dm ON dm.document_id = l.document_id
    GROUP BY l.facility_id, dm.matter_id
    UNION ALL
    SELECT f.id, r.matter_id, 'rule'::text, r.score, 2
    FROM facilities f
    JOIN layer_matter_rules r ON r.layer = f.layer
    WHERE f.status <> 'removed'
) c
WHERE NOT EXISTS (
    SELECT 1 FROM manual_links x
    JOIN facilities fx ON fx.source = x.source AND fx.source_id = x.source_id
    WHERE x.exclude AND fx.id = c.facility_id AND x.matter_id = c.matter_id
)
ORDER BY c.facility_id, c.matter_id, c.precedence
"""


def upgrade() -> None:
    op.create_table(
        "matters",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("title_en", sa.Text()),
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("department", sa.Text()),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="matters_pkey"),
    )
    op.create_index("matters_domain_idx", "matters", ["domain"])

    op.create_table(
        "documents",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("title_en", sa.Text()),
        sa.Column("body", sa.Text()),
        sa.Column("url", sa.Text()),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("published_at", sa.Date()),
        sa.Column("issuer", sa.Text()),
        sa.Column("doc_number", sa.Text()),
        sa.Column("content_hash", sa.Text(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="documents_pkey"),
    )
    op.create_index(
        "documents_category_published_idx",
        "documents",
        ["category", sa.text("published_at DESC")],
    )
    op.create_index("documents_published_idx", "documents", [sa.text("published_at DESC"), "id"])

    op.create_table(
        "document_matters",
        sa.Column("document_id", sa.Text(), nullable=False),
        sa.Column("matter_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("document_id", "matter_id", name="document_matters_pkey"),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name="document_matters_document_id_fkey",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["matter_id"],
            ["matters.id"],
            name="document_matters_matter_id_fkey",
            ondelete="CASCADE",
        ),
    )
    op.create_index("document_matters_matter_idx", "document_matters", ["matter_id", "document_id"])

    op.create_table(
        "manual_links",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("matter_id", sa.Text(), nullable=False),
        sa.Column("exclude", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("source", "source_id", "matter_id", name="manual_links_pkey"),
        sa.ForeignKeyConstraint(
            ["matter_id"],
            ["matters.id"],
            name="manual_links_matter_id_fkey",
            ondelete="CASCADE",
        ),
    )
    op.create_index("manual_links_matter_idx", "manual_links", ["matter_id"])

    op.create_table(
        "layer_matter_rules",
        sa.Column("layer", sa.Text(), nullable=False),
        sa.Column("matter_id", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("layer", "matter_id", name="layer_matter_rules_pkey"),
        sa.ForeignKeyConstraint(
            ["matter_id"],
            ["matters.id"],
            name="layer_matter_rules_matter_id_fkey",
            ondelete="CASCADE",
        ),
    )
    op.create_index("layer_matter_rules_matter_idx", "layer_matter_rules", ["matter_id"])

    op.create_table(
        "facility_document_links",
        sa.Column("facility_id", sa.Text(), nullable=False),
        sa.Column("document_id", sa.Text(), nullable=False),
        sa.Column("method", sa.Text(), server_default="name_match", nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("matched", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("facility_id", "document_id", name="facility_document_links_pkey"),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facilities.id"],
            name="facility_document_links_facility_id_fkey",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name="facility_document_links_document_id_fkey",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "method IN ('manual', 'name_match')", name="facility_document_links_method_check"
        ),
    )
    op.create_index(
        "facility_document_links_document_idx", "facility_document_links", ["document_id"]
    )

    # free-text search over titles (GET /api/v1/disclosures?q=) stays an index scan
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE INDEX documents_title_trgm_idx ON documents USING gin (title gin_trgm_ops)")
    op.execute(FACILITY_MATTER_LINKS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS facility_matter_links")
    for table in (
        "facility_document_links",
        "layer_matter_rules",
        "manual_links",
        "document_matters",
        "documents",
        "matters",
    ):
        op.drop_table(table)
