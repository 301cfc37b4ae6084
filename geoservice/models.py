"""The schema as SQLAlchemy Core tables (the migrations create them; queries may use them)."""

from __future__ import annotations

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
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
    # H3 cell at resolution 15 as a bigint; any coarser cell is derived from it in SQL
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
    Index("facilities_h3_idx", "h3_15"),
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

# --- disclosures (issue "Five disclosures") adds its tables below this line -----------------

# --- smart toilets (issue "Smart toilets") adds its tables below this line ------------------
