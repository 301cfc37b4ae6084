"""Open data: a layer's live facilities as CSV, GeoJSON, GeoPackage or GeoParquet.

What an export guarantees and how:

- **Bounded memory**: rows come from a server-side cursor ``BATCH_ROWS`` at a time and each
  batch is written before the next is read (GeoPackage through GDAL's Arrow stream writer,
  GeoParquet one row group per batch), so a million facilities take no more memory than one
  batch.
- **Re-ingesting an export changes nothing**: the columns are what ``servicemap ingest FILE
  --layer KEY --source SOURCE`` maps back by name: every facility field (``opening_hours`` is
  the source's own text, as first loaded), each layer attribute in a column of its name,
  ``source`` and ``source_id`` (the facility id derives from them), and the position: ``lon``
  and ``lat`` columns in CSV, the geometry elsewhere (the footprint where a facility has one,
  else its point). Rows are in id order, so the same data makes the same file.
- **CSV** is UTF-8 with a byte-order mark (Excel on a Chinese Windows desktop otherwise reads
  it as GBK) and every text cell a spreadsheet would run as a formula is protected with a
  leading apostrophe (``ingest.csv_cells``; the CSV reader removes it again).
- **Downloads** (``/downloads/{layer}.csv|.geojson|.gpkg``) are built once per version of the
  layer (its facility count and last change) into ``.data/downloads`` and served as files:
  exact ``Content-Length``, an ETag, and no rebuild until a load changes the layer.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import orjson
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from psycopg import sql
from psycopg.rows import tuple_row

import layers
from geoservice.api.deps import SettingsDep
from geoservice.api.errors import NotFound
from geoservice.db.connection import connect, database_url
from geoservice.settings import PROJECT_ROOT
from ingest.csv_cells import protect
from layers import facility

router = APIRouter(tags=["Open data"])

#: rows per batch read from the database and written to the file
BATCH_ROWS = 20_000
#: the formats of `servicemap export`; the first three are downloads too
FORMATS = {"csv": ".csv", "geojson": ".geojson", "gpkg": ".gpkg", "parquet": ".parquet"}
DOWNLOAD_FORMATS = ("csv", "geojson", "gpkg")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "geojson": "application/geo+json",
    "gpkg": "application/geopackage+sqlite3",
    "parquet": "application/vnd.apache.parquet",
}
#: the licence the downloads are published under (the page and the files' metadata say so)
LICENCE = "CC BY 4.0"
LICENCE_URL = "https://creativecommons.org/licenses/by/4.0/"
#: where downloads are built (git-ignored, like the embedded database)
CACHE_DIR = PROJECT_ROOT / ".data" / "downloads"
#: bumped when the files' layout changes, so files built before are not served again
LAYOUT_VERSION = "1"

Format = Literal["csv", "geojson", "gpkg", "parquet"]
Kind = Literal["text", "int", "float", "bool", "list", "time"]

#: facility fields in the order of the files' columns (without the position)
FIELD_COLUMNS = (
    "id", "source", "source_id", "layer", "name", "name_en", "address", "phone", "website",
    "opening_hours", "accessible", "status", "status_reason", "verified_at", "updated_at",
)  # fmt: skip
_FIELD_KINDS: dict[str, Kind] = {
    "accessible": "bool",
    "verified_at": "time",
    "updated_at": "time",
}
_FIELD_SQL = {
    # the source's own text: loading it again gives the same normalised hours and raw text
    "opening_hours": "coalesce(f.opening_hours_raw, f.opening_hours)",
}
_ARROW_TYPES: dict[Kind, pa.DataType] = {
    "text": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "list": pa.string(),
    "time": pa.timestamp("us", tz="UTC"),
}


class ExportError(Exception):
    """An export that cannot be made (unknown layer or format)."""


@dataclass(frozen=True)
class Column:
    """One column of an export: its name, kind and the SQL that selects it (alias ``f``)."""

    name: str
    kind: Kind
    select: sql.Composable


def _attribute_kind(annotation: Any) -> Kind:
    """The kind of a layer attribute's pydantic annotation (Optional and Annotated unwrapped)."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _attribute_kind(members[0]) if len(members) == 1 else "text"
    if origin in (list, tuple, set):
        return "list"
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    return "text"


def columns(layer: str) -> list[Column]:
    """The columns of a layer's export: facility fields, then each attribute by its name."""
    out = [
        Column(
            name,
            _FIELD_KINDS.get(name, "text"),
            sql.SQL(_FIELD_SQL.get(name, f"f.{name}")),
        )
        for name in FIELD_COLUMNS
    ]
    assert set(FIELD_COLUMNS) >= set(facility.MAPPED_COLUMNS)
    casts = {"int": "::bigint", "float": "::double precision", "bool": "::boolean"}
    for name, info in layers.get_layer(layer).attributes.model_fields.items():
        kind = _attribute_kind(info.annotation)
        if kind == "list":
            # JSON text; an empty list is left out (loading it again gives the default, [])
            select = sql.SQL("nullif(f.attributes -> {}, '[]'::jsonb)::text").format(
                sql.Literal(name)
            )
        else:
            select = sql.SQL("(f.attributes ->> {}){}").format(
                sql.Literal(name), sql.SQL(casts.get(kind, ""))
            )
        out.append(Column(name, kind, select))
    return out


_ROWS = f"""
SELECT {{columns}}, ST_X(f.geom) AS lon, ST_Y(f.geom) AS lat,
       ST_AsBinary(coalesce(f.footprint, f.geom)) AS geometry,
       CASE WHEN f.footprint IS NOT NULL THEN ST_AsGeoJSON(f.footprint) END AS footprint_json
FROM facilities f
WHERE {facility.live("f")} AND f.layer = %(layer)s {{source}}
ORDER BY f.id
"""
_COUNT = f"SELECT count(*) AS n FROM facilities f WHERE {facility.live('f')} AND f.layer = %(layer)s {{source}}"
_SOURCE = "AND f.source = %(source)s"
_VERSIONS = f"""
SELECT layer, count(*) FILTER (WHERE {facility.live(None)}) AS facilities, count(*) AS stored,
       max(updated_at) AS last_update
FROM facilities GROUP BY layer
"""


def _rows_query(cols: list[Column], source: str | None) -> sql.Composed:
    selected = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(c.select, sql.Identifier(c.name)) for c in cols
    )
    return sql.SQL(_ROWS).format(
        columns=selected, source=sql.SQL(_SOURCE if source is not None else "")
    )


def count_rows(conn: psycopg.Connection[Any], layer: str, source: str | None = None) -> int:
    """How many facilities an export of this layer (and source) holds."""
    query = sql.SQL(_COUNT).format(source=sql.SQL(_SOURCE if source is not None else ""))
    row = conn.execute(query, {"layer": layer, "source": source}).fetchone()
    assert row is not None
    return int(row["n"] if isinstance(row, dict) else row[0])


def _batches(
    conn: psycopg.Connection[Any], cols: list[Column], layer: str, source: str | None
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows, BATCH_ROWS at a time, from a server-side cursor (its own transaction)."""
    with conn.transaction(), conn.cursor(name="servicemap_export", row_factory=tuple_row) as cur:
        cur.execute(_rows_query(cols, source), {"layer": layer, "source": source})
        while rows := cur.fetchmany(BATCH_ROWS):
            yield rows


def format_of(path: Path) -> Format:
    """The export format a file name asks for, by its extension."""
    for fmt, extension in FORMATS.items():
        if path.name.lower().endswith(extension):
            return typing.cast(Format, fmt)
    raise ExportError(f"{path.name}: the file name must end with {', '.join(FORMATS.values())}")


def export_layer(
    conn: psycopg.Connection[Any],
    layer: str,
    path: Path,
    *,
    fmt: Format | None = None,
    source: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write a layer's live facilities (of one source, if given) to `path`; how many."""
    if layer not in layers.all_layers():
        raise ExportError(
            f"{layer!r} is not a layer; known layers: {', '.join(layers.all_layers())}"
        )
    fmt = fmt or format_of(path)
    cols = columns(layer)
    writer = {"csv": _write_csv, "geojson": _write_geojson, "gpkg": _write_gpkg,
              "parquet": _write_parquet}[fmt]  # fmt: skip
    # written beside the target and renamed: a reader never sees half a file
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=FORMATS[fmt], dir=path.parent
    )
    os.close(handle)
    part = Path(temporary)
    try:
        part.unlink()
        written = 0
        batches = _batches(conn, cols, layer, source)

        def counted() -> Iterator[list[tuple[Any, ...]]]:
            nonlocal written
            for rows in batches:
                yield rows
                written += len(rows)
                if progress is not None:
                    progress(len(rows))

        writer(part, layer, cols, counted())
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return written


# --- CSV ---------------------------------------------------------------------------------------


def _csv_cell(value: Any, kind: Kind) -> Any:
    if value is None:
        return ""
    if kind == "bool":
        return "true" if value else "false"
    if kind == "time":
        return value.isoformat()
    if kind == "text" or kind == "list":
        return protect(value)
    return value


def _write_csv(path: Path, layer: str, cols: list[Column], batches: Iterator[list[Any]]) -> None:
    n = len(cols)
    kinds = [c.kind for c in cols]
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow([*(c.name for c in cols), "lon", "lat"])
        for rows in batches:
            writer.writerows(
                [*(_csv_cell(row[i], kinds[i]) for i in range(n)), repr(row[n]), repr(row[n + 1])]
                for row in rows
            )


# --- GeoJSON -----------------------------------------------------------------------------------


def _write_geojson(
    path: Path, layer: str, cols: list[Column], batches: Iterator[list[Any]]
) -> None:
    n = len(cols)
    names = [c.name for c in cols]
    kinds = [c.kind for c in cols]
    times = [i for i, k in enumerate(kinds) if k == "time"]
    lists = [i for i, k in enumerate(kinds) if k == "list"]
    with path.open("wb") as out:
        out.write(b'{"type":"FeatureCollection","name":' + orjson.dumps(layer) + b',"features":[\n')
        first = True
        for rows in batches:
            chunk = bytearray()
            for row in rows:
                values = list(row[:n])
                for i in times:
                    if values[i] is not None:
                        values[i] = values[i].isoformat()
                for i in lists:
                    if values[i] is not None:
                        values[i] = orjson.Fragment(values[i])
                properties = dict(zip(names, values, strict=True))
                fid = properties.pop("id")
                footprint = row[n + 3]
                geometry = (
                    orjson.Fragment(footprint)
                    if footprint is not None
                    else {"type": "Point", "coordinates": [row[n], row[n + 1]]}
                )
                if not first:
                    chunk += b",\n"
                first = False
                chunk += orjson.dumps(
                    {"type": "Feature", "id": fid, "geometry": geometry, "properties": properties}
                )
            out.write(chunk)
        out.write(b"\n]}\n")


# --- Arrow: GeoPackage and GeoParquet ----------------------------------------------------------


def _schema(cols: list[Column], metadata: dict[bytes, bytes] | None = None) -> pa.Schema:
    fields = [pa.field(c.name, _ARROW_TYPES[c.kind]) for c in cols]
    fields.append(pa.field("geometry", pa.binary()))
    return pa.schema(fields, metadata=metadata)


def _arrow_batches(
    schema: pa.Schema, cols: list[Column], batches: Iterator[list[Any]]
) -> Iterator[pa.RecordBatch]:
    n = len(cols)
    for rows in batches:
        values = list(zip(*rows, strict=True))
        arrays = [pa.array(values[i], type=schema.field(i).type) for i in range(n)]
        arrays.append(pa.array(values[n + 2], type=pa.binary()))
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _write_gpkg(path: Path, layer: str, cols: list[Column], batches: Iterator[list[Any]]) -> None:
    schema = _schema(cols)
    stream = pa.RecordBatchReader.from_batches(schema, _arrow_batches(schema, cols, batches))
    pyogrio.write_arrow(
        stream,
        path,
        layer=layer,
        driver="GPKG",
        geometry_name="geometry",
        geometry_type="Unknown",
        crs="EPSG:4326",
        layer_metadata={"LICENCE": LICENCE},
    )


GEO_METADATA = {
    "version": "1.1.0",
    "primary_column": "geometry",
    # no "crs": GeoParquet's default, OGC:CRS84 (WGS 84 longitude, latitude)
    "columns": {"geometry": {"encoding": "WKB", "geometry_types": []}},
}


def _write_parquet(
    path: Path, layer: str, cols: list[Column], batches: Iterator[list[Any]]
) -> None:
    schema = _schema(cols, {b"geo": orjson.dumps(GEO_METADATA), b"licence": LICENCE.encode()})
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in _arrow_batches(schema, cols, batches):
            writer.write_batch(batch)


# --- downloads ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerVersion:
    """What a layer's downloads are built from: its live facilities and their last change."""

    layer: str
    facilities: int
    stored: int
    last_update: datetime | None

    def key(self) -> str:
        """A short key that changes whenever a load changes the layer."""
        text = f"{LAYOUT_VERSION}|{self.layer}|{self.facilities}|{self.stored}|{self.last_update}"
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def layer_versions(conn: psycopg.Connection[Any]) -> dict[str, LayerVersion]:
    """Every layer's version (layers without facilities have none and no files)."""
    found = {
        row["layer"]: LayerVersion(
            row["layer"], int(row["facilities"]), int(row["stored"]), row["last_update"]
        )
        for row in conn.execute(_VERSIONS).fetchall()
    }
    return {key: found.get(key, LayerVersion(key, 0, 0, None)) for key in layers.all_layers()}


def _database_key(url: str) -> str:
    return hashlib.blake2b(url.encode(), digest_size=6).hexdigest()


def download_file(url: str, version: LayerVersion, fmt: Format) -> Path:
    """The layer's file in this format for this version, built now if it is not there yet."""
    folder = CACHE_DIR / _database_key(url)
    path = folder / f"{version.layer}-{version.key()}{FORMATS[fmt]}"
    if path.exists():
        return path
    with connect(url) as conn:
        export_layer(conn, version.layer, path, fmt=fmt)
    # files of older versions of this layer and format are not served again
    for old in folder.glob(f"{version.layer}-*{FORMATS[fmt]}"):
        if old != path and not old.name.startswith("."):
            old.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class DownloadFile:
    """One downloadable file: its format, URL path and size in bytes."""

    format: str
    href: str
    size: int


@dataclass(frozen=True)
class LayerDownloads:
    """What the downloads page lists for a layer."""

    layer: str
    facilities: int
    last_update: datetime | None
    files: list[DownloadFile]


def listing(url: str) -> list[LayerDownloads]:
    """Each layer's downloads with exact sizes (building the files a load made stale)."""
    with connect(url) as conn:
        versions = layer_versions(conn)
    out = []
    for key, version in versions.items():
        files = [
            DownloadFile(
                fmt,
                f"/downloads/{key}{FORMATS[fmt]}",
                download_file(url, version, typing.cast(Format, fmt)).stat().st_size,
            )
            for fmt in DOWNLOAD_FORMATS
        ]
        out.append(LayerDownloads(key, version.facilities, version.last_update, files))
    return out


async def downloads_listing(settings: Any) -> list[LayerDownloads]:
    """`listing` for the app's database, in a worker thread."""
    url = database_url(settings.db)
    return await anyio.to_thread.run_sync(listing, url)


@router.get(
    "/downloads/{filename}",
    summary="A layer's facilities as CSV, GeoJSON or GeoPackage",
    response_class=Response,
)
async def download(
    request: Request,
    settings: SettingsDep,
    filename: Annotated[str, PathParam(max_length=100, description="{layer}.csv|.geojson|.gpkg")],
) -> Response:
    """The file, built once per version of the layer; exact Content-Length, ETag."""
    key, _, extension = filename.rpartition(".")
    if key not in layers.all_layers():
        raise NotFound(f"no layer {key!r}; layers: {', '.join(layers.all_layers())}")
    if extension not in DOWNLOAD_FORMATS:
        raise NotFound(f"no {extension!r} download; formats: {', '.join(DOWNLOAD_FORMATS)}")
    fmt = typing.cast(Format, extension)
    url = database_url(settings.db)

    def build() -> Path:
        with connect(url) as conn:
            version = layer_versions(conn)[key]
        return download_file(url, version, fmt)

    path = await anyio.to_thread.run_sync(build)
    etag = '"' + path.stem.rpartition("-")[2] + "-" + fmt + '"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=60"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return FileResponse(
        path, media_type=MEDIA_TYPES[fmt], filename=f"{key}{FORMATS[fmt]}", headers=headers
    )
