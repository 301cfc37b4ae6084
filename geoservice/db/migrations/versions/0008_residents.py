"""residents: password-less accounts, subscriptions, an events table filled by triggers, feeds.

Events are recorded where things happen, by statement-level triggers with transition tables (one
set-based INSERT per statement, so a load of a million rows stays one statement): new and changed
documents and new document ↔ matter links; facilities added (only while someone follows an area:
a first load of a district then costs one EXISTS probe), closed, reopened or removed; progress of
hall cases that a resident has added to their page. ``geoservice.residents.feed`` fans pending
events out to the residents they concern with one INSERT … SELECT per batch.

Revision ID: 0008
Revises: 0007

Frozen history: the tables are written out as they were created, never imported from the
models (which describe today's schema; tests/geoservice/test_schema.py compares the two).
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = (
    "resident_ratings",
    "resident_cases",
    "resident_views",
    "resident_feed",
    "resident_events",
    "resident_subscriptions",
    "resident_sessions",
    "resident_codes",
    "residents",
)


def _now(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def _resident_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["resident_id"], ["residents.id"], name=f"{table}_resident_id_fkey", ondelete="CASCADE"
    )


TRIGGERS = """
CREATE FUNCTION resident_events_documents_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO resident_events (kind, document_id, title)
    SELECT 'document_new', id, title FROM new_rows;
    RETURN NULL;
END
$$;

CREATE FUNCTION resident_events_documents_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO resident_events (kind, document_id, title)
    SELECT 'document_changed', n.id, n.title
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE o.content_hash IS DISTINCT FROM n.content_hash;
    RETURN NULL;
END
$$;

-- a document newly filed under a matter; a document whose own event is still pending is fanned
-- out with all its matters anyway
CREATE FUNCTION resident_events_document_matters_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO resident_events (kind, document_id, matter_id, title)
    SELECT 'document_linked', n.document_id, n.matter_id, d.title
    FROM new_rows n JOIN documents d ON d.id = n.document_id
    WHERE NOT EXISTS (SELECT 1 FROM resident_events e
                      WHERE e.fanned_out_at IS NULL AND e.document_id = n.document_id
                        AND e.matter_id IS NULL);
    RETURN NULL;
END
$$;

-- new facilities concern only residents following an area: none, nothing recorded
CREATE FUNCTION resident_events_facilities_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM resident_subscriptions WHERE kind = 'area') THEN
        INSERT INTO resident_events (kind, facility_id, layer, geom, title)
        SELECT 'facility_new', id, layer, geom, name FROM new_rows WHERE status <> 'removed';
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION resident_events_facilities_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO resident_events (kind, facility_id, layer, geom, title, detail)
    SELECT CASE n.status WHEN 'removed' THEN 'facility_removed'
                         WHEN 'temporarily_closed' THEN 'facility_closed'
                         ELSE 'facility_reopened' END,
           n.id, n.layer, n.geom, n.name, n.status_reason
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE o.status IS DISTINCT FROM n.status;
    RETURN NULL;
END
$$;

-- progress of a case some resident keeps on their page
CREATE FUNCTION resident_events_cases() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO resident_events (kind, case_id, facility_id, matter_id, title, detail)
    SELECT 'case', n.case_id, c.hall_id, c.matter_id, m.title, n.status
    FROM new_rows n
    JOIN hall_cases c ON c.id = n.case_id
    JOIN matters m ON m.id = c.matter_id
    WHERE EXISTS (SELECT 1 FROM resident_cases rc WHERE rc.case_id = n.case_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER documents_resident_events_insert AFTER INSERT ON documents
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION resident_events_documents_inserted();
CREATE TRIGGER documents_resident_events_update AFTER UPDATE ON documents
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION resident_events_documents_updated();
CREATE TRIGGER document_matters_resident_events_insert AFTER INSERT ON document_matters
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION resident_events_document_matters_inserted();
CREATE TRIGGER facilities_resident_events_insert AFTER INSERT ON facilities
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION resident_events_facilities_inserted();
CREATE TRIGGER facilities_resident_events_update AFTER UPDATE ON facilities
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION resident_events_facilities_updated();
CREATE TRIGGER hall_case_events_resident_events_insert AFTER INSERT ON hall_case_events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION resident_events_cases();
"""

DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS hall_case_events_resident_events_insert ON hall_case_events;
DROP TRIGGER IF EXISTS facilities_resident_events_update ON facilities;
DROP TRIGGER IF EXISTS facilities_resident_events_insert ON facilities;
DROP TRIGGER IF EXISTS document_matters_resident_events_insert ON document_matters;
DROP TRIGGER IF EXISTS documents_resident_events_update ON documents;
DROP TRIGGER IF EXISTS documents_resident_events_insert ON documents;
DROP FUNCTION IF EXISTS resident_events_cases();
DROP FUNCTION IF EXISTS resident_events_facilities_updated();
DROP FUNCTION IF EXISTS resident_events_facilities_inserted();
DROP FUNCTION IF EXISTS resident_events_document_matters_inserted();
DROP FUNCTION IF EXISTS resident_events_documents_updated();
DROP FUNCTION IF EXISTS resident_events_documents_inserted();
"""


def upgrade() -> None:
    op.create_table(
        "residents",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("lang", sa.Text(), server_default="zh-Hans", nullable=False),
        sa.Column("consent_version", sa.Text(), nullable=False),
        _now("consented_at"),
        sa.Column("recommendations", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("mail_digest", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("feed_key", sa.Text(), nullable=False),
        sa.Column("mail_key", sa.Text(), nullable=False),
        _now("created_at"),
        _now("last_seen_at"),
        sa.PrimaryKeyConstraint("id", name="residents_pkey"),
        sa.UniqueConstraint("email", name="residents_email_key"),
        sa.UniqueConstraint("feed_key", name="residents_feed_key_key"),
        sa.UniqueConstraint("mail_key", name="residents_mail_key_key"),
        sa.CheckConstraint("lang IN ('zh-Hans', 'zh-Hant', 'en')", name="residents_lang_check"),
    )
    op.create_index("residents_last_seen_idx", "residents", ["last_seen_at"])

    op.create_table(
        "resident_codes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("code_hash", sa.Text(), nullable=False),
        sa.Column("network", sa.Text(), nullable=False),
        _now("created_at"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tries", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="resident_codes_pkey"),
    )
    op.create_index("resident_codes_email_idx", "resident_codes", ["email", "created_at"])
    op.create_index("resident_codes_network_idx", "resident_codes", ["network", "created_at"])

    op.create_table(
        "resident_sessions",
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("resident_id", sa.BigInteger(), nullable=False),
        _now("created_at"),
        _now("last_used_at"),
        sa.PrimaryKeyConstraint("token_hash", name="resident_sessions_pkey"),
        _resident_fk("resident_sessions"),
    )
    op.create_index("resident_sessions_resident_idx", "resident_sessions", ["resident_id"])

    op.create_table(
        "resident_subscriptions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("resident_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("layer", sa.Text()),
        sa.Column("radius_m", sa.Float()),
        sa.Column("geom", Geometry("POINT", srid=4326, spatial_index=False)),
        _now("created_at"),
        sa.PrimaryKeyConstraint("id", name="resident_subscriptions_pkey"),
        _resident_fk("resident_subscriptions"),
        sa.UniqueConstraint("resident_id", "kind", "target", name="resident_subscriptions_key"),
        sa.CheckConstraint(
            "kind IN ('matter', 'domain', 'facility', 'area')",
            name="resident_subscriptions_kind_check",
        ),
        sa.CheckConstraint(
            "(kind = 'area') = (geom IS NOT NULL AND radius_m > 0 AND layer IS NOT NULL)",
            name="resident_subscriptions_area_check",
        ),
    )
    op.create_index(
        "resident_subscriptions_target_idx",
        "resident_subscriptions",
        ["kind", "target", "resident_id"],
    )
    op.create_index(
        "resident_subscriptions_geog_idx",
        "resident_subscriptions",
        [sa.text("(geom::geography)")],
        postgresql_using="gist",
    )

    op.create_table(
        "resident_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("document_id", sa.Text()),
        sa.Column("matter_id", sa.Text()),
        sa.Column("facility_id", sa.Text()),
        sa.Column("case_id", sa.BigInteger()),
        sa.Column("layer", sa.Text()),
        sa.Column("geom", Geometry("POINT", srid=4326, spatial_index=False)),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text()),
        _now("at"),
        sa.Column("fanned_out_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="resident_events_pkey"),
        sa.CheckConstraint(
            "kind IN ('document_new', 'document_changed', 'document_linked', 'facility_new',"
            " 'facility_closed', 'facility_reopened', 'facility_removed', 'case')",
            name="resident_events_kind_check",
        ),
    )
    op.create_index(
        "resident_events_pending_idx",
        "resident_events",
        ["id"],
        postgresql_where=sa.text("fanned_out_at IS NULL"),
    )
    op.create_index("resident_events_facility_idx", "resident_events", ["facility_id", "id"])

    op.create_table(
        "resident_feed",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("resident_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        # the subscription that brought the item (NULL: the resident's own case)
        sa.Column("subscription_id", sa.BigInteger()),
        _now("created_at"),
        sa.Column("mailed_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="resident_feed_pkey"),
        _resident_fk("resident_feed"),
    )
    op.create_index("resident_feed_resident_idx", "resident_feed", ["resident_id", "id"])
    op.create_index(
        "resident_feed_unmailed_idx",
        "resident_feed",
        ["resident_id"],
        postgresql_where=sa.text("mailed_at IS NULL"),
    )

    op.create_table(
        "resident_views",
        sa.Column("resident_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        _now("viewed_at"),
        sa.PrimaryKeyConstraint("resident_id", "kind", "target", name="resident_views_pkey"),
        _resident_fk("resident_views"),
    )

    op.create_table(
        "resident_cases",
        sa.Column("resident_id", sa.BigInteger(), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        _now("created_at"),
        sa.PrimaryKeyConstraint("resident_id", "case_id", name="resident_cases_pkey"),
        _resident_fk("resident_cases"),
        sa.ForeignKeyConstraint(
            ["case_id"], ["hall_cases.id"], name="resident_cases_case_id_fkey", ondelete="CASCADE"
        ),
    )
    op.create_index("resident_cases_case_idx", "resident_cases", ["case_id"])

    op.create_table(
        "resident_ratings",
        sa.Column("resident_id", sa.BigInteger(), nullable=False),
        sa.Column("rating_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resident_id", "rating_id", name="resident_ratings_pkey"),
        _resident_fk("resident_ratings"),
        sa.ForeignKeyConstraint(
            ["rating_id"],
            ["facility_ratings.id"],
            name="resident_ratings_rating_id_fkey",
            ondelete="CASCADE",
        ),
    )
    op.create_index("resident_ratings_rating_idx", "resident_ratings", ["rating_id"])

    op.execute(TRIGGERS)


def downgrade() -> None:
    op.execute(DROP_TRIGGERS)
    for table in TABLES:
        op.drop_table(table)
