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
from sqlalchemy.dialects.postgresql import JSONB

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
    # H3 cell at resolution 15 as a bigint (the counted resolutions: h3_counts)
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
    Index("facilities_layer_idx", "layer"),
)

# One row whose n a statement-level trigger (migration 0009) bumps after every change to
# facilities, in the writer's transaction: geoservice.query.tiles checks its kept tiles by it.
facilities_version = Table(
    "facilities_version",
    metadata,
    Column("id", Boolean, primary_key=True, server_default=text("true")),
    Column("n", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("id", name="facilities_version_one_row"),
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

# --- H3 counts per cell (migrations 0003, 0012) ----------------------------------------------
# H3 cells do not nest exactly, so each facility's cell at every counted resolution (0-10) is
# computed by h3 itself (geoservice.query.h3sync.sync_cells) and the counts per (resolution,
# layer, cell) are kept in h3_counts. Statement-level triggers on facilities (in the migrations)
# queue every facility whose geometry, layer or removed-ness changed in h3_pending, with what
# the counts count for it.

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
    # its layer and position when last counted (NULL: not counted, being new or removed)
    Column("old_layer", Text),
    Column("old_geom", Geometry("POINT", srid=4326, spatial_index=False)),
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

# --- service halls (issue 14) adds its tables below this line ---------------------------------
# A hall's set-up is data (`servicemap halls load`); reloading replaces windows and matters and
# keeps slots, cases and tickets. Capacity is enforced by the database: a booking raises
# hall_slots.booked with one INSERT … ON CONFLICT DO UPDATE … WHERE booked < capacity (the row
# lock serialises a slot's bookings) and hall_slots_booked_check refuses more than capacity.

halls = Table(
    "halls",
    metadata,
    Column(
        "facility_id",
        Text,
        ForeignKey("facilities.id", ondelete="CASCADE", name="halls_facility_id_fkey"),
        primary_key=True,
    ),
    Column("slot_minutes", SmallInteger, nullable=False),
    Column("booking_days_ahead", SmallInteger, nullable=False),
    # OSM opening_hours; NULL = the facility's
    Column("hours", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("slot_minutes BETWEEN 5 AND 240", name="halls_slot_minutes_check"),
    CheckConstraint("booking_days_ahead BETWEEN 0 AND 90", name="halls_booking_days_ahead_check"),
)

hall_windows = Table(
    "hall_windows",
    metadata,
    Column(
        "hall_id",
        Text,
        ForeignKey("halls.facility_id", ondelete="CASCADE", name="hall_windows_hall_id_fkey"),
        primary_key=True,
    ),
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("position", Integer, nullable=False),
)

hall_window_matters = Table(
    "hall_window_matters",
    metadata,
    Column(
        "hall_id",
        Text,
        ForeignKey(
            "halls.facility_id", ondelete="CASCADE", name="hall_window_matters_hall_id_fkey"
        ),
        primary_key=True,
    ),
    # the loader replaces a hall's windows and their matters together
    Column("window_id", Text, primary_key=True),
    Column(
        "matter_id",
        Text,
        ForeignKey("matters.id", ondelete="CASCADE", name="hall_window_matters_matter_id_fkey"),
        primary_key=True,
    ),
    Index("hall_window_matters_matter_idx", "hall_id", "matter_id"),
)

# the matters a hall handles: capacity per slot and the queue-number letter (A001 …)
hall_matters = Table(
    "hall_matters",
    metadata,
    Column(
        "hall_id",
        Text,
        ForeignKey("halls.facility_id", ondelete="CASCADE", name="hall_matters_hall_id_fkey"),
        primary_key=True,
    ),
    Column(
        "matter_id",
        Text,
        ForeignKey("matters.id", ondelete="CASCADE", name="hall_matters_matter_id_fkey"),
        primary_key=True,
    ),
    Column("capacity", Integer, nullable=False),
    Column("queue_group", Text, nullable=False),
    CheckConstraint("capacity BETWEEN 1 AND 1000", name="hall_matters_capacity_check"),
    Index("hall_matters_matter_idx", "matter_id"),
)

hall_slots = Table(
    "hall_slots",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "hall_id",
        Text,
        ForeignKey("halls.facility_id", ondelete="CASCADE", name="hall_slots_hall_id_fkey"),
        nullable=False,
    ),
    Column(
        "matter_id",
        Text,
        ForeignKey("matters.id", ondelete="CASCADE", name="hall_slots_matter_id_fkey"),
        nullable=False,
    ),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("booked", Integer, nullable=False, server_default="0"),
    UniqueConstraint("hall_id", "matter_id", "starts_at", name="hall_slots_start_key"),
    CheckConstraint("booked >= 0 AND booked <= capacity", name="hall_slots_booked_check"),
    CheckConstraint("ends_at > starts_at", name="hall_slots_period_check"),
)

HALL_CASE_STATUSES = (
    "booked", "checked_in", "called", "done", "needs_documents", "referred", "cancelled",
    "lapsed", "no_show",
)  # fmt: skip

# a case: an appointment (kind 'appointment', from booking) or a walk-in ticket's visit;
# `code` is the resident's secret; name and phone are erased `retention_days` after it ends
hall_cases = Table(
    "hall_cases",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("code", Text, nullable=False),
    Column(
        "hall_id",
        Text,
        ForeignKey("halls.facility_id", ondelete="CASCADE", name="hall_cases_hall_id_fkey"),
        nullable=False,
    ),
    Column(
        "matter_id",
        Text,
        ForeignKey("matters.id", ondelete="CASCADE", name="hall_cases_matter_id_fkey"),
        nullable=False,
    ),
    Column("kind", Text, nullable=False),
    Column(
        "slot_id",
        BigInteger,
        ForeignKey("hall_slots.id", ondelete="SET NULL", name="hall_cases_slot_id_fkey"),
    ),
    Column("starts_at", DateTime(timezone=True)),
    Column("ends_at", DateTime(timezone=True)),
    # the local (district time zone) day of the visit
    Column("day", Date, nullable=False),
    Column("name", Text),
    Column("phone", Text),
    Column("status", Text, nullable=False),
    Column("client_hash", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("ended_at", DateTime(timezone=True)),
    Column("erased_at", DateTime(timezone=True)),
    UniqueConstraint("code", name="hall_cases_code_key"),
    CheckConstraint("kind IN ('appointment', 'walk_in')", name="hall_cases_kind_check"),
    CheckConstraint(
        "status IN ('booked', 'checked_in', 'called', 'done', 'needs_documents', 'referred',"
        " 'cancelled', 'lapsed', 'no_show')",
        name="hall_cases_status_check",
    ),
    CheckConstraint("name IS NULL OR char_length(name) <= 50", name="hall_cases_name_check"),
    # one booking per phone per matter per day
    Index(
        "hall_cases_phone_day_key",
        "phone",
        "matter_id",
        "day",
        unique=True,
        postgresql_where=text("phone IS NOT NULL AND status <> 'cancelled'"),
    ),
    Index("hall_cases_hall_day_idx", "hall_id", "day"),
    Index("hall_cases_client_idx", "client_hash", "created_at"),
    Index("hall_cases_booked_idx", "starts_at", postgresql_where=text("status = 'booked'")),
    Index("hall_cases_ended_idx", "ended_at", postgresql_where=text("erased_at IS NULL")),
)

hall_case_events = Table(
    "hall_case_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "case_id",
        BigInteger,
        ForeignKey("hall_cases.id", ondelete="CASCADE", name="hall_case_events_case_id_fkey"),
        nullable=False,
    ),
    Column("status", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("detail", Text),
    Index("hall_case_events_case_idx", "case_id", "at"),
)

# the last queue number given per hall, day and group (A, B, …): numbers restart each day
hall_ticket_counters = Table(
    "hall_ticket_counters",
    metadata,
    Column(
        "hall_id",
        Text,
        ForeignKey(
            "halls.facility_id", ondelete="CASCADE", name="hall_ticket_counters_hall_id_fkey"
        ),
        primary_key=True,
    ),
    Column("day", Date, primary_key=True),
    Column("queue_group", Text, primary_key=True),
    Column("last", Integer, nullable=False),
)

hall_tickets = Table(
    "hall_tickets",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "case_id",
        BigInteger,
        ForeignKey("hall_cases.id", ondelete="CASCADE", name="hall_tickets_case_id_fkey"),
        nullable=False,
    ),
    Column(
        "hall_id",
        Text,
        ForeignKey("halls.facility_id", ondelete="CASCADE", name="hall_tickets_hall_id_fkey"),
        nullable=False,
    ),
    Column("matter_id", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("queue_group", Text, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("number", Text, nullable=False),
    # an appointment's slot start (NULL for walk-ins)
    Column("due_at", DateTime(timezone=True)),
    Column("issued_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("status", Text, nullable=False, server_default="waiting"),
    Column("window_id", Text),
    Column("called_at", DateTime(timezone=True)),
    Column("calls", Integer, nullable=False, server_default="0"),
    Column("finished_at", DateTime(timezone=True)),
    Column("outcome", Text),
    UniqueConstraint("case_id", name="hall_tickets_case_id_key"),
    UniqueConstraint("hall_id", "day", "queue_group", "seq", name="hall_tickets_number_key"),
    CheckConstraint(
        "status IN ('waiting', 'called', 'done', 'no_show')", name="hall_tickets_status_check"
    ),
    CheckConstraint(
        "outcome IS NULL OR outcome IN ('done', 'needs_documents', 'referred')",
        name="hall_tickets_outcome_check",
    ),
    Index(
        "hall_tickets_open_idx",
        "hall_id",
        "status",
        postgresql_where=text("status IN ('waiting', 'called')"),
    ),
    Index("hall_tickets_service_idx", "hall_id", "matter_id", "finished_at"),
)

# one evaluation per case on the national five-level scale (5 非常满意 … 1 非常不满意)
hall_evaluations = Table(
    "hall_evaluations",
    metadata,
    Column(
        "case_id",
        BigInteger,
        ForeignKey("hall_cases.id", ondelete="CASCADE", name="hall_evaluations_case_id_fkey"),
        primary_key=True,
    ),
    Column("hall_id", Text, nullable=False),
    Column("window_id", Text),
    Column("matter_id", Text, nullable=False),
    Column("score", SmallInteger, nullable=False),
    Column("comment", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("acknowledged_by", Text),
    CheckConstraint("score BETWEEN 1 AND 5", name="hall_evaluations_score_check"),
    CheckConstraint(
        "comment IS NULL OR char_length(comment) <= 500", name="hall_evaluations_comment_check"
    ),
    Index("hall_evaluations_hall_idx", "hall_id", "created_at"),
    Index(
        "hall_evaluations_alert_idx",
        "created_at",
        postgresql_where=text("score <= 2 AND acknowledged_at IS NULL"),
    ),
)

# --- residents (issue 15) adds its tables below this line -------------------------------------
# Password-less accounts (an e-mail address and what the resident chose), their subscriptions,
# the events that triggers record where things happen (migration 0008: statement-level, with
# transition tables) and each resident's feed, filled from the events by one set-based
# INSERT … SELECT per batch (geoservice.residents.feed).

RESIDENT_SUBSCRIPTION_KINDS = ("matter", "domain", "facility", "area")
RESIDENT_EVENT_KINDS = (
    "document_new", "document_changed", "document_linked", "facility_new", "facility_closed",
    "facility_reopened", "facility_removed", "case",
)  # fmt: skip

residents = Table(
    "residents",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("email", Text, nullable=False),
    Column("lang", Text, nullable=False, server_default="zh-Hans"),
    Column("consent_version", Text, nullable=False),
    Column("consented_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("recommendations", Boolean, nullable=False, server_default=text("false")),
    Column("mail_digest", Boolean, nullable=False, server_default=text("true")),
    # the private Atom feed's URL key and the mails' unsubscribe key
    Column("feed_key", Text, nullable=False),
    Column("mail_key", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("email", name="residents_email_key"),
    UniqueConstraint("feed_key", name="residents_feed_key_key"),
    UniqueConstraint("mail_key", name="residents_mail_key_key"),
    CheckConstraint("lang IN ('zh-Hans', 'zh-Hant', 'en')", name="residents_lang_check"),
    Index("residents_last_seen_idx", "last_seen_at"),
)

# one-time sign-in codes, also for addresses without an account (no enumeration); hashed
resident_codes = Table(
    "resident_codes",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("email", Text, nullable=False),
    Column("code_hash", Text, nullable=False),
    # salted hash of the requesting network (/24, /48), for the per-network limit
    Column("network", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("tries", SmallInteger, nullable=False, server_default="0"),
    Column("used_at", DateTime(timezone=True)),
    Index("resident_codes_email_idx", "email", "created_at"),
    Index("resident_codes_network_idx", "network", "created_at"),
)

resident_sessions = Table(
    "resident_sessions",
    metadata,
    Column("token_hash", Text, primary_key=True),
    Column(
        "resident_id",
        BigInteger,
        ForeignKey("residents.id", ondelete="CASCADE", name="resident_sessions_resident_id_fkey"),
        nullable=False,
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("resident_sessions_resident_idx", "resident_id"),
)

# `target`: the matter id, domain key or facility id; for an area "layer@lat,lon+radius"
resident_subscriptions = Table(
    "resident_subscriptions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "resident_id",
        BigInteger,
        ForeignKey(
            "residents.id", ondelete="CASCADE", name="resident_subscriptions_resident_id_fkey"
        ),
        nullable=False,
    ),
    Column("kind", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("label", Text, nullable=False),
    Column("layer", Text),
    Column("radius_m", Float),
    Column("geom", Geometry("POINT", srid=4326, spatial_index=False)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("resident_id", "kind", "target", name="resident_subscriptions_key"),
    CheckConstraint(
        "kind IN ('matter', 'domain', 'facility', 'area')",
        name="resident_subscriptions_kind_check",
    ),
    CheckConstraint(
        "(kind = 'area') = (geom IS NOT NULL AND radius_m > 0 AND layer IS NOT NULL)",
        name="resident_subscriptions_area_check",
    ),
    Index("resident_subscriptions_target_idx", "kind", "target", "resident_id"),
    Index(
        "resident_subscriptions_geog_idx",
        text("(geom::geography)"),
        postgresql_using="gist",
    ),
)

resident_events = Table(
    "resident_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("document_id", Text),
    # set for 'document_linked' (the matter the document was filed under) and cases
    Column("matter_id", Text),
    Column("facility_id", Text),
    Column("case_id", BigInteger),
    Column("layer", Text),
    Column("geom", Geometry("POINT", srid=4326, spatial_index=False)),
    Column("title", Text, nullable=False),
    Column("detail", Text),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("fanned_out_at", DateTime(timezone=True)),
    CheckConstraint(
        "kind IN ('document_new', 'document_changed', 'document_linked', 'facility_new',"
        " 'facility_closed', 'facility_reopened', 'facility_removed', 'case')",
        name="resident_events_kind_check",
    ),
    Index("resident_events_pending_idx", "id", postgresql_where=text("fanned_out_at IS NULL")),
    Index("resident_events_facility_idx", "facility_id", "id"),
    # pruning (migration 0010): events fanned out before the retention cut-off
    Index("resident_events_fanned_out_idx", "fanned_out_at"),
)

resident_feed = Table(
    "resident_feed",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "resident_id",
        BigInteger,
        ForeignKey("residents.id", ondelete="CASCADE", name="resident_feed_resident_id_fkey"),
        nullable=False,
    ),
    Column("event_id", BigInteger, nullable=False),
    # the subscription that brought the item (NULL: the resident's own case)
    Column("subscription_id", BigInteger),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("mailed_at", DateTime(timezone=True)),
    Index("resident_feed_resident_idx", "resident_id", "id"),
    Index("resident_feed_unmailed_idx", "resident_id", postgresql_where=text("mailed_at IS NULL")),
    # pruning (migration 0010): an old event's items, and whether any is left
    Index("resident_feed_event_idx", "event_id"),
)

# pages a resident looked at, kept only while they have recommendations turned on
resident_views = Table(
    "resident_views",
    metadata,
    Column(
        "resident_id",
        BigInteger,
        ForeignKey("residents.id", ondelete="CASCADE", name="resident_views_resident_id_fkey"),
        primary_key=True,
    ),
    Column("kind", Text, primary_key=True),
    Column("target", Text, primary_key=True),
    Column("viewed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

resident_cases = Table(
    "resident_cases",
    metadata,
    Column(
        "resident_id",
        BigInteger,
        ForeignKey("residents.id", ondelete="CASCADE", name="resident_cases_resident_id_fkey"),
        primary_key=True,
    ),
    Column(
        "case_id",
        BigInteger,
        ForeignKey("hall_cases.id", ondelete="CASCADE", name="resident_cases_case_id_fkey"),
        primary_key=True,
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("resident_cases_case_idx", "case_id"),
)

# ratings a resident gave (the link goes on erasure; the rating stays, anonymous)
resident_ratings = Table(
    "resident_ratings",
    metadata,
    Column(
        "resident_id",
        BigInteger,
        ForeignKey("residents.id", ondelete="CASCADE", name="resident_ratings_resident_id_fkey"),
        primary_key=True,
    ),
    Column(
        "rating_id",
        BigInteger,
        ForeignKey(
            "facility_ratings.id", ondelete="CASCADE", name="resident_ratings_rating_id_fkey"
        ),
        primary_key=True,
    ),
    Index("resident_ratings_rating_idx", "rating_id"),
)
