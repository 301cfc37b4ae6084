"""The schema as SQLAlchemy Core tables: the one description of every table (queries may use them).

Every table the migrations create is described here, with its columns, types, server defaults,
keys, constraints and indexes under their database names; tests/geoservice/test_schema.py
migrates an empty database and checks with Alembic's autogenerate comparison
(``geoservice.db.migrate.schema_differences``) that models and database agree. A schema change is
therefore two edits: the model here, and a new migration (``alembic revision --autogenerate``
drafts it). The migrations are frozen history and never import this module.

What the models leave to the migrations, because SQLAlchemy tables do not describe it:
views (``facility_matter_links``), triggers and functions (the H3 queue triggers, the
toilet_readings partition and sensor ingestion functions), extensions (postgis, pg_trgm), and the
monthly partitions of ``toilet_readings`` (created by ``toilet_readings_maintain()``; the
partitioning itself is in the model's ``postgresql_partition_by``). Spatial indexes are explicit
``Index`` objects (``spatial_index=False`` on every geometry column), so they are compared like any
other index.
"""

from __future__ import annotations

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Sequence,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

FACILITY_STATUSES = ("active", "temporarily_closed", "removed")

facilities = Table(
    "facilities",
    metadata,
    # URL-safe, derived from (source, source_id): stable across re-ingests of the same row
    Column("id", Text, primary_key=True),
    Column("layer", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("name_en", Text),
    Column("address", Text),
    Column("phone", Text),
    Column("website", Text),
    # OSM opening_hours syntax when it parses; the source's own text always kept beside it
    Column("opening_hours", Text),
    Column("opening_hours_raw", Text),
    # true / false / NULL = unknown, never guessed
    Column("accessible", Boolean),
    Column("status", Text, nullable=False, server_default="active"),
    Column("status_reason", Text),
    Column("source", Text, nullable=False),
    Column("source_id", Text, nullable=False),
    Column("attributes", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("geom", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
    Column("footprint", Geometry("GEOMETRY", srid=4326, spatial_index=False)),
    # H3 cell at resolution 15 as a bigint (every resolution's cell: facility_h3)
    Column("h3_15", BigInteger, nullable=False),
    # hash of the stored fields: an unchanged row is never rewritten
    Column("content_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("verified_at", DateTime(timezone=True)),
    UniqueConstraint("source", "source_id", name="facilities_source_key"),
    CheckConstraint(
        "status IN ('active', 'temporarily_closed', 'removed')", name="facilities_status_check"
    ),
    Index("facilities_geom_idx", "geom", postgresql_using="gist"),
    Index(
        "facilities_geog_idx",
        text("(geom::geography)"),
        postgresql_using="gist",
    ),
    Index("facilities_layer_idx", "layer"),
)

ingest_runs = Table(
    "ingest_runs",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False, server_default="facilities"),
    Column("source", Text),
    Column("layer", Text),
    Column("path", Text, nullable=False),
    Column("file_sha256", Text),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_s", Float),
    Column("read", Integer, nullable=False, server_default="0"),
    Column("inserted", Integer, nullable=False, server_default="0"),
    Column("updated", Integer, nullable=False, server_default="0"),
    Column("unchanged", Integer, nullable=False, server_default="0"),
    Column("removed", Integer, nullable=False, server_default="0"),
    Column("rejected", Integer, nullable=False, server_default="0"),
    Column("warnings", Integer, nullable=False, server_default="0"),
    # ok / failed / dry_run
    Column("outcome", Text, nullable=False),
    Column("report", JSONB),
)

# --- H3 cells and counts per cell (migration 0003) -------------------------------------------
# H3 cells do not nest exactly, so each facility's cell at every resolution is computed by h3
# itself (geoservice.query.h3.sync_cells) and the counts per (resolution, layer, cell) are kept
# in h3_counts. Statement-level triggers on facilities (in the migration) queue every facility
# whose geometry, layer or removed-ness changed in h3_pending.

h3_pending_seq = Sequence("h3_pending_seq", metadata=metadata)

h3_pending = Table(
    "h3_pending",
    metadata,
    Column("facility_id", Text, primary_key=True),
    # the queue's order: re-queuing a facility moves it to the back
    Column(
        "changed",
        BigInteger,
        nullable=False,
        server_default=text("nextval('h3_pending_seq')"),
    ),
)

# what h3_counts currently counts for each facility
facility_h3 = Table(
    "facility_h3",
    metadata,
    Column("facility_id", Text, primary_key=True),
    Column("layer", Text, nullable=False),
    # not removed: only live facilities are counted
    Column("live", Boolean, nullable=False),
    # cells[r + 1] = the cell at resolution r (0-15)
    Column("cells", ARRAY(BigInteger), nullable=False),
)

h3_counts = Table(
    "h3_counts",
    metadata,
    Column("resolution", SmallInteger, primary_key=True),
    Column("layer", Text, primary_key=True),
    Column("cell", BigInteger, primary_key=True),
    Column("count", Integer, nullable=False),
)

# --- disclosures (issue "Five disclosures") adds its tables below this line -----------------

LINK_METHODS = ("manual", "rule", "name_match")

matters = Table(
    "matters",
    metadata,
    Column("id", Text, primary_key=True),
    Column("title", Text, nullable=False),
    Column("title_en", Text),
    # one of layers.DOMAINS (checked by the loader, which names the allowed keys)
    Column("domain", Text, nullable=False),
    Column("department", Text),
    Column("content_hash", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("matters_domain_idx", "domain"),
)

documents = Table(
    "documents",
    metadata,
    Column("id", Text, primary_key=True),
    Column("title", Text, nullable=False),
    Column("title_en", Text),
    # optional full text: the name matcher reads it as well as the title
    Column("body", Text),
    Column("url", Text),
    # one of layers.CATEGORIES (the five stages)
    Column("category", Text, nullable=False),
    Column("published_at", Date),
    Column("issuer", Text),
    Column("doc_number", Text),
    Column("content_hash", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("documents_category_published_idx", "category", text("published_at DESC")),
    Index("documents_published_idx", text("published_at DESC"), "id"),
    # free-text search over titles (GET /api/v1/disclosures?q=): pg_trgm
    Index(
        "documents_title_trgm_idx",
        "title",
        postgresql_using="gin",
        postgresql_ops={"title": "gin_trgm_ops"},
    ),
)

document_matters = Table(
    "document_matters",
    metadata,
    Column("document_id", Text, ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True),
    Column("matter_id", Text, ForeignKey("matters.id", ondelete="CASCADE"), primary_key=True),
    Index("document_matters_matter_idx", "matter_id", "document_id"),
)

# manual links from the catalogue, by the facility's (source, source_id) so they survive
# re-ingests and may name facilities loaded later; `exclude` removes a rule/name-match link
manual_links = Table(
    "manual_links",
    metadata,
    Column("source", Text, primary_key=True),
    Column("source_id", Text, primary_key=True),
    Column("matter_id", Text, ForeignKey("matters.id", ondelete="CASCADE"), primary_key=True),
    Column("exclude", Boolean, nullable=False, server_default=text("false")),
    Index("manual_links_matter_idx", "matter_id"),
)

# rule links are layer-wide by definition (every school serves enrolment), so they are kept
# per layer; the facility_matter_links view expands them to facilities
layer_matter_rules = Table(
    "layer_matter_rules",
    metadata,
    Column("layer", Text, primary_key=True),
    Column("matter_id", Text, ForeignKey("matters.id", ondelete="CASCADE"), primary_key=True),
    Column("score", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Index("layer_matter_rules_matter_idx", "matter_id"),
)

# a document that names a facility (title or body, either script)
facility_document_links = Table(
    "facility_document_links",
    metadata,
    Column(
        "facility_id",
        Text,
        ForeignKey("facilities.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("document_id", Text, ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True),
    Column("method", Text, nullable=False, server_default="name_match"),
    Column("score", Float, nullable=False),
    Column("matched", Text, nullable=False),
    CheckConstraint(
        "method IN ('manual', 'name_match')", name="facility_document_links_method_check"
    ),
    Index("facility_document_links_document_idx", "document_id"),
)

# --- smart toilets (issue "Smart toilets") adds its tables below this line ------------------

# devices are revoked, never deleted: readings and their dedup keys keep pointing at them
toilet_devices = Table(
    "toilet_devices",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "facility_id",
        Text,
        ForeignKey("facilities.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # SHA-256 of the token; the token itself is shown once and never stored
    Column("token_hash", Text, nullable=False, unique=True),
    Column("stalls", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
    Index("toilet_devices_facility_idx", "facility_id"),
)

# the current state of each stall, applied only from readings newer than the stored one
toilet_stalls = Table(
    "toilet_stalls",
    metadata,
    Column(
        "device_id",
        BigInteger,
        ForeignKey("toilet_devices.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("stall_id", Text, primary_key=True),
    Column("facility_id", Text, nullable=False),
    # NULL until the first reading reports the stall
    Column("occupied", Boolean),
    Column("observed_at", DateTime(timezone=True)),
    Index("toilet_stalls_facility_idx", "facility_id"),
)

# Partitioned by month of observation; partitions are created ahead by
# toilet_readings_maintain() and on ingest by toilet_readings_ensure_partition().
# Exactly once per (device, seq): a unique key on a partitioned table must include the
# partition key (observed_at), which would let one seq be stored twice with two times. So
# the service makes the check explicit instead: toilet_ingest_begin() locks the toilet's status
# row (posts for one device are stored one at a time) and names the seqs already in a partition
# within the ingest horizon; only the others are copied in (older readings are refused at the
# door, and `readings prune` never drops readings younger than the horizon).
toilet_readings = Table(
    "toilet_readings",
    metadata,
    Column("device_id", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("facility_id", Text, nullable=False),
    Column("observed_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # as posted: [{"id": ..., "occupied": true|false}, ...]
    Column("stalls", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("stalls_total", Integer, nullable=False, server_default="0"),
    Column("stalls_free", Integer, nullable=False, server_default="0"),
    # entries counted since the device's previous reading
    Column("people_count", Integer),
    Column("nh3_ppm", Float),
    Column("humidity_pct", Float),
    Column("battery_pct", Float),
    Column("consumables", JSONB),
    # the duplicate check and a device's history
    Index("toilet_readings_device_seq_idx", "device_id", "seq"),
    postgresql_partition_by="RANGE (observed_at)",
)

# one row per sensor-equipped toilet, maintained on ingest; never rewound by older readings
toilet_status = Table(
    "toilet_status",
    metadata,
    Column(
        "facility_id",
        Text,
        ForeignKey("facilities.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("stalls_total", Integer, nullable=False, server_default="0"),
    Column("stalls_free", Integer, nullable=False, server_default="0"),
    Column("people_since_clean", BigInteger, nullable=False, server_default="0"),
    Column("nh3_ppm", Float),
    Column("humidity_pct", Float),
    Column("battery_pct", Float),
    # observation time of the newest reading applied
    Column("observed_at", DateTime(timezone=True)),
    # server time the sensor was last heard from
    Column("last_seen", DateTime(timezone=True)),
    # open alerts: when ammonia went above / use went above the thresholds (NULL = no alert)
    Column("nh3_high_since", DateTime(timezone=True)),
    Column("busy_since", DateTime(timezone=True)),
    Column("cleaned_at", DateTime(timezone=True)),
    Column("cleaned_by", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

facility_ratings = Table(
    "facility_ratings",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "facility_id",
        Text,
        ForeignKey("facilities.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("score", Integer, nullable=False),
    # toilets only
    Column("cleanliness", Integer),
    Column("smell", Integer),
    Column("supplies", Integer),
    Column("tags", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("comment", Text),
    # salted hashes of the client (IP + user agent) and of its anonymous cookie token
    Column("client_hash", Text, nullable=False),
    Column("cookie_hash", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("score BETWEEN 1 AND 5", name="facility_ratings_score_check"),
    CheckConstraint(
        "(cleanliness IS NULL OR cleanliness BETWEEN 1 AND 5)"
        " AND (smell IS NULL OR smell BETWEEN 1 AND 5)"
        " AND (supplies IS NULL OR supplies BETWEEN 1 AND 5)",
        name="facility_ratings_subscores_check",
    ),
    CheckConstraint(
        "comment IS NULL OR char_length(comment) <= 500", name="facility_ratings_comment_check"
    ),
    Index("facility_ratings_facility_idx", "facility_id", "created_at"),
    Index("facility_ratings_client_idx", "client_hash", "created_at"),
    Index("facility_ratings_cookie_idx", "cookie_hash", "created_at"),
    Index("facility_ratings_created_idx", "created_at"),
)

# when a facility's 30-day average fell below the alert threshold (maintained on rating)
facility_rating_alerts = Table(
    "facility_rating_alerts",
    metadata,
    Column(
        "facility_id",
        Text,
        ForeignKey("facilities.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("low_since", DateTime(timezone=True), nullable=False),
)

staff_members = Table(
    "staff_members",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False, unique=True),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
)

toilet_cleanings = Table(
    "toilet_cleanings",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "facility_id",
        Text,
        ForeignKey("facilities.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("staff_name", Text, nullable=False),
    Column("cleaned_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("people_since_clean", BigInteger, nullable=False, server_default="0"),
    # the alert kinds the cleaning closed
    Column("closed_alerts", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Index("toilet_cleanings_facility_idx", "facility_id", "cleaned_at"),
)
