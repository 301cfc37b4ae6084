"""What every facility is, whatever its layer: its fields, its statuses, which ones are live.

The one description of a facility's fields (`FIELDS`): the loader's record columns, content
hash, staging table and upsert, the mapping file's ``[fields]`` and the columns every facility
query selects are all derived from it, and a test compares it with the ``facilities`` table of
``geoservice.db.models`` (the schema), so the two cannot drift apart.

The one definition of "live" (not removed) that every query, page, export and load shares:
removed facilities stay stored (ids stay stable, pages say "removed") but never appear in
nearest, counts, maps or lists.
"""

from __future__ import annotations

from dataclasses import dataclass

#: a facility's lifecycle, as stored in ``facilities.status``
STATUSES = ("active", "temporarily_closed", "removed")


@dataclass(frozen=True)
class Field:
    """One field of a facility: its name, SQL type, and where it lives and what it takes part in."""

    name: str
    #: SQL type of its value in a loaded record (the staging table); stored-only: in the table
    sql_type: str
    #: NOT NULL, in records and in the table alike
    required: bool = False
    #: a column of ``facilities`` (a position is stored as ``geom``, not as ``lon``/``lat``)
    stored: bool = True
    #: in the canonical records a load produces from a file
    record: bool = True
    #: set by the database itself (defaults, ``now()``), never by a load
    automatic: bool = False
    #: a source column can fill it (the mapping file's ``[fields]``)
    mapped: bool = False
    #: a change of it makes a stored row "updated" (it goes into the content hash)
    hashed: bool = False
    #: part of a facility's identity: never changed by an upsert
    identity: bool = False
    #: selected by every facility query (shaped into a GeoJSON Feature)
    served: bool = False


#: Every field, in record order (the content hash depends on the order of the hashed ones).
FIELDS: tuple[Field, ...] = (
    # URL-safe, derived from (source, source_id): stable across re-ingests of the same row
    Field("id", "text", required=True, identity=True, served=True),
    Field("source_id", "text", required=True, mapped=True, identity=True, served=True),
    Field("layer", "text", required=True, hashed=True, served=True),
    Field("name", "text", required=True, mapped=True, hashed=True, served=True),
    Field("name_en", "text", mapped=True, hashed=True, served=True),
    Field("address", "text", mapped=True, hashed=True, served=True),
    Field("phone", "text", mapped=True, hashed=True, served=True),
    Field("website", "text", mapped=True, hashed=True, served=True),
    # OSM opening_hours syntax when it parses; the source's own text always kept beside it
    Field("opening_hours", "text", mapped=True, hashed=True, served=True),
    Field("opening_hours_raw", "text", hashed=True, served=True),
    # true / false / NULL = unknown, never guessed
    Field("accessible", "boolean", mapped=True, hashed=True, served=True),
    Field("status", "text", required=True, mapped=True, hashed=True, served=True),
    Field("status_reason", "text", mapped=True, hashed=True, served=True),
    # one value per load (the run's source name), so not in the records
    Field("source", "text", required=True, record=False, identity=True, served=True),
    Field("attributes", "jsonb", required=True, hashed=True, served=True),
    # the position: WGS 84 lon/lat in records, a PostGIS point in the table
    Field("lon", "double precision", required=True, stored=False, hashed=True),
    Field("lat", "double precision", required=True, stored=False, hashed=True),
    Field("geom", "geometry(Point, 4326)", required=True, record=False, served=True),
    # hex EWKB in records, a geometry in the table
    Field("footprint", "text", hashed=True),
    # H3 cell at resolution 15 (derived from the position, so not hashed)
    Field("h3_15", "bigint", required=True),
    # hash of the hashed fields, computed by the load: an unchanged row is never rewritten
    Field("content_hash", "text", required=True, record=False),
    Field("created_at", "timestamptz", required=True, record=False, automatic=True),
    Field("updated_at", "timestamptz", required=True, record=False, automatic=True, served=True),
    Field("verified_at", "timestamptz", mapped=True, hashed=True, served=True),
)

#: the canonical record columns every reader/transform produces
RECORD_FIELDS = tuple(f for f in FIELDS if f.record)
RECORD_COLUMNS = tuple(f.name for f in RECORD_FIELDS)
#: the stored fields whose change makes a row "updated", in content-hash order
HASHED_COLUMNS = tuple(f.name for f in FIELDS if f.hashed)
#: facility fields a mapping (or a same-named column) can fill
MAPPED_COLUMNS = tuple(f.name for f in FIELDS if f.mapped)
#: the columns of the facilities table
TABLE_COLUMNS = tuple(f.name for f in FIELDS if f.stored)
#: the columns a load writes (everything stored but what the database sets itself)
LOADED_COLUMNS = tuple(f.name for f in FIELDS if f.stored and not f.automatic)
#: the columns an upsert of a changed facility rewrites
UPDATED_COLUMNS = tuple(f.name for f in FIELDS if f.stored and not (f.automatic or f.identity))
#: the stored columns every facility query selects
SERVED_COLUMNS = tuple(f.name for f in FIELDS if f.served)


def live(alias: str | None = "f") -> str:
    """SQL condition: the facility (table alias `alias`, None for none) is not removed."""
    column = f"{alias}.status" if alias else "status"
    return f"{column} <> 'removed'"
