"""disclosures: matters, documents, their links to facilities, and the effective-links view.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

from geoservice.db.models import (
    document_matters,
    documents,
    facility_document_links,
    layer_matter_rules,
    manual_links,
    matters,
)

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
    bind = op.get_bind()
    for table in (
        matters,
        documents,
        document_matters,
        manual_links,
        layer_matter_rules,
        facility_document_links,
    ):
        table.create(bind)
    # free-text search over titles (GET /api/v1/disclosures?q=) stays an index scan
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE INDEX documents_title_trgm_idx ON documents USING gin (title gin_trgm_ops)")
    op.execute(FACILITY_MATTER_LINKS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS facility_matter_links")
    bind = op.get_bind()
    for table in (
        facility_document_links,
        layer_matter_rules,
        manual_links,
        document_matters,
        documents,
        matters,
    ):
        table.drop(bind)
