"""Readers: every format a district receives, streamed in chunks so memory stays bounded.

Each reader yields `Chunk`s: the source columns as a DataFrame, the geometries (shapely, in the
file's CRS) when the format has them, and where each row came from (row number, feature id).
GDAL formats go through pyogrio's Arrow stream, CSV through pandas' chunked reader, GeoParquet
through pyarrow's batches, OSM PBF through GDAL's OSM driver, and map-vendor POI responses
(several JSON objects one after another) through an incremental JSON decoder.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import re
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pyogrio.errors
import pyproj
import shapely

import layers
from ingest import crs as crs_mod
from ingest import csv_cells
from ingest.mapping import WKT_NAMES, X_NAMES, Y_NAMES
from ingest.report import IngestError

#: rows per chunk: large enough for vectorised work, small enough to bound memory (a load holds
#: four or five chunks at once: read, converted, built, sent; 100,000 peaked 200 MB higher)
CHUNK_ROWS = 25_000
#: rows of the first chunk of a GDAL or GeoParquet file: the database starts loading them while
#: the next chunk is read (reading a whole first chunk before anything is sent kept it idle)
FIRST_CHUNK_ROWS = 5_000
#: the longest field accepted; anything longer is a row error (a 10 MB "name" is not a name)
MAX_FIELD_CHARS = 100_000
#: how much of a file is looked at to recognise its format / encoding / delimiter
_HEAD_BYTES = 64 * 1024

FORMATS = ("csv", "excel", "geojson", "gpkg", "shapefile", "flatgeobuf", "geoparquet", "osm",
           "vendor-json")  # fmt: skip

_GDAL_FORMATS = {"geojson", "gpkg", "shapefile", "flatgeobuf"}


@dataclass
class Chunk:
    """Rows of a source: columns, geometries (or None), row numbers, feature ids.

    When every geometry of the chunk is a plain 2D point, a reader may give their coordinates
    as `xy` (n × 2) instead of shapely objects (`geometry` is then None).
    """

    frame: pd.DataFrame
    geometry: np.ndarray | None
    rows: np.ndarray
    fids: np.ndarray | None = None
    xy: np.ndarray | None = None


@dataclass
class Source:
    """An opened source file: its format, columns, declared CRS, and its chunks."""

    path: Path
    format: str
    columns: list[str]
    has_geometry: bool
    #: the CRS the file declares (None: it does not say)
    crs: crs_mod.Crs | None = None
    #: the CRS its kind implies when nothing else says (map vendors: GCJ-02)
    default_crs: str | None = None
    #: rows to expect, when cheap to know (progress bars)
    total: int | None = None
    #: rows already mapped to canonical columns and layers (OSM)
    canonical: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    #: what a row number counts (report.ROW_MEANINGS): the file's lines, a sheet's rows or its records
    row_label: str = "record"

    def chunks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
        """Stream the rows."""
        reader = _READERS[self.format]
        yield from reader(self, chunk_rows)


# --- format detection ------------------------------------------------------------------------


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(_HEAD_BYTES)


_VENDOR_HINT = re.compile(rb'"(data|pois|results)"\s*:\s*\[')
_GEOJSON_HINT = re.compile(rb'"type"\s*:\s*"(FeatureCollection|Feature)"')


def detect_format(path: Path) -> str:
    """The format of a file, by content first and extension second."""
    if not path.exists():
        raise IngestError(f"{path} does not exist")
    if path.is_dir():
        raise IngestError(f"{path} is a directory: give a file")
    if path.stat().st_size == 0:
        raise IngestError(f"{path.name} is empty (0 bytes)")
    head = _head(path)
    name = path.name.lower()
    if head.startswith(b"SQLite format 3\x00"):
        return "gpkg"
    if head.startswith(b"fgb"):
        return "flatgeobuf"
    if head.startswith(b"PAR1"):
        return "geoparquet"
    if head.startswith(_OLE2_MAGIC):
        return "excel"
    if head.startswith(b"PK\x03\x04") or name.endswith(".zip"):
        # an .xlsx is a zip file too: tell it from a zipped Shapefile by what it holds
        return "excel" if _is_xlsx(path) else "shapefile"
    if name.endswith((".xlsx", ".xlsm", ".xls")):
        return _not_a_workbook(path, head)
    if b"OSMHeader" in head[:64] or name.endswith(".pbf"):
        return "osm"
    if name.endswith(".shp"):
        return "shapefile"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith((b"{", b"[")):
        if _VENDOR_HINT.search(head) and not _GEOJSON_HINT.search(head):
            return "vendor-json"
        return "geojson"
    if name.endswith((".gpkg", ".fgb", ".parquet", ".geoparquet", ".geojson", ".json")):
        # the extension promises a binary/JSON format the content does not have
        kind = {".gpkg": "GeoPackage", ".fgb": "FlatGeobuf", ".parquet": "GeoParquet"}
        label = next((v for k, v in kind.items() if name.endswith(k)), "JSON")
        raise IngestError(f"{path.name} is not a valid {label} file (corrupt or truncated?)")
    return "csv"


def open_source(
    path: Path,
    *,
    osm_layers: list[str] | None = None,
    lang: str = "zh-Hans",
    sheet: str | None = None,
    header_row: int | None = None,
    encoding: str | None = None,
) -> Source:
    """Open a file of any supported format (nothing is read beyond its header).

    `sheet` (a name or a 1-based number) and `header_row` (1-based) choose an Excel workbook's
    table; `encoding` overrides the detected text encoding of a CSV file or a Shapefile's DBF.
    """
    fmt = detect_format(path)
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise IngestError(f"--encoding {encoding!r} is not a known text encoding") from None
        if fmt not in ("csv", "shapefile"):
            raise IngestError(f"--encoding applies to CSV and Shapefile (DBF) files, not {fmt}")
    if (sheet is not None or header_row is not None) and fmt != "excel":
        raise IngestError(f"--sheet and --header-row apply to Excel workbooks, not {fmt}")
    if fmt == "csv":
        return _open_csv(path, encoding)
    if fmt == "excel":
        return _open_excel(path, sheet, header_row)
    if fmt == "vendor-json":
        return _open_vendor(path)
    if fmt == "geoparquet":
        return _open_parquet(path)
    if fmt == "osm":
        return _open_osm(path, osm_layers, lang)
    return _open_gdal(path, fmt, encoding)


def _gdal_error(path: Path, fmt: str, exc: Exception) -> IngestError:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return IngestError(f"cannot read {path.name} as {fmt} (corrupt or truncated?): {text}")


# --- GDAL formats (GeoJSON, GeoPackage, Shapefile plain or zipped, FlatGeobuf) ----------------


_GDAL_READ_ERRORS = (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError,
                     pyogrio.errors.FieldError, pyogrio.errors.GeometryError,
                     pyogrio.errors.CRSError, RuntimeError, OSError, ValueError,
                     pa.ArrowException, zipfile.BadZipFile, shapely.errors.GEOSException)  # fmt: skip


def _open_gdal(path: Path, fmt: str, encoding: str | None = None) -> Source:
    target = str(path)
    if fmt == "shapefile" and path.name.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as archive:
                shps = [n for n in archive.namelist() if n.lower().endswith(".shp")]
        except zipfile.BadZipFile as exc:
            raise IngestError(f"cannot read {path.name}: not a valid zip file ({exc})") from None
        if len(shps) != 1:
            raise IngestError(
                f"{path.name} must hold exactly one .shp file, found {len(shps)}: {shps[:10]}"
            )
        target = f"/vsizip/{path}/{shps[0]}"
    if fmt == "shapefile" and encoding is None:
        encoding = dbf_encoding(path)
    try:
        names = pyogrio.list_layers(target)
        if len(names) == 0:
            raise IngestError(f"{path.name} has no layers")
        if len(names) > 1:
            listed = ", ".join(str(n) for n in names[:, 0])
            raise IngestError(f"{path.name} has several layers ({listed}): give a file with one")
        info = pyogrio.read_info(target, encoding=encoding)
    except _GDAL_READ_ERRORS as exc:
        raise _gdal_error(path, fmt, exc) from None
    columns = [str(c) for c in info["fields"]]
    # a GeoJSON feature's own "id" (GDAL gives numeric ones as the FID) is the source's id
    feature_ids = fmt == "geojson" and "id" not in columns and _GEOJSON_ID.search(_head(path))
    if feature_ids:
        _unique_feature_ids(path, target)
        columns.append("id")
    declared = pyproj.CRS.from_user_input(info["crs"]) if info.get("crs") else None
    total = int(info["features"]) if int(info.get("features", -1)) >= 0 else None
    return Source(
        path=path,
        format=fmt,
        columns=columns,
        has_geometry=info.get("geometry_type") is not None,
        crs=crs_mod.from_proj(declared) if declared is not None else None,
        total=total,
        options={"target": target, "encoding": encoding, "feature_ids": bool(feature_ids)},
    )


_GEOJSON_ID = re.compile(
    rb'"type"\s*:\s*"Feature"\s*,\s*"id"\s*:|[{,]\s*"id"\s*:\s*[^,]*,\s*"type"\s*:\s*"Feature"'
)


_DUPLICATE_FID = re.compile(r"Several features with id = (.+) have been found")


def _unique_feature_ids(path: Path, target: str) -> None:
    """Refuse a GeoJSON whose numeric feature ids repeat.

    GDAL makes numeric feature ids its FIDs and renumbers a repeated one with nothing but a
    warning: the feature would get a made-up identity and the duplicate would pass unseen. Which
    feature was renumbered is lost, so the file is refused as a whole (ids only, one pass).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            pyogrio.read_arrow(target, columns=[], read_geometry=False, return_fids=True)
        except _GDAL_READ_ERRORS:
            return  # reading the features says what is wrong, with the rest of its checks
    for warning in caught:
        if (found := _DUPLICATE_FID.search(str(warning.message))) is not None:
            raise IngestError(
                f"{path.name}: duplicate id: several features have the id {found[1]}; "
                "GeoJSON feature ids must be unique (fix them, or name an id property in the "
                "mapping's [fields] source_id)"
            )


def dbf_encoding(path: Path) -> str | None:
    """The text encoding of a Shapefile's DBF when GDAL cannot know it, else None (GDAL's own).

    GDAL honours a `.cpg` file and the DBF header's code-page byte (LDID, byte 29). With neither
    (byte 0, no `.cpg`: common in Chinese GIS exports) it would read ISO-8859-1 and turn GBK
    names into mojibake, so the records are tried as UTF-8, then as GB18030.
    """
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                names = {n.lower(): n for n in archive.namelist()}
                dbf = next((n for k, n in names.items() if k.endswith(".dbf")), None)
                if dbf is None or any(k.endswith(".cpg") for k in names):
                    return None
                with archive.open(dbf) as handle:
                    data = handle.read(_DBF_SAMPLE_BYTES)
        else:
            dbf_path = next(
                (p for s in (".dbf", ".DBF") if (p := path.with_suffix(s)).exists()), None
            )
            if dbf_path is None or any(path.with_suffix(s).exists() for s in (".cpg", ".CPG")):
                return None
            with dbf_path.open("rb") as handle:
                data = handle.read(_DBF_SAMPLE_BYTES)
    except (OSError, zipfile.BadZipFile):
        return None
    if len(data) < 32 or data[29] != 0:
        return None
    header_size = int.from_bytes(data[8:10], "little")
    records = data[header_size:]
    if records.isascii():
        return None
    try:
        # a sample may end inside a character: ignore an incomplete last one
        codecs.getincrementaldecoder("utf-8")().decode(records)
    except UnicodeDecodeError:
        return "GB18030"
    return "UTF-8"


#: bytes of a DBF looked at to tell its encoding
_DBF_SAMPLE_BYTES = 4 << 20


def _read_gdal(source: Source, chunk_rows: int) -> Iterator[Chunk]:
    target = source.options["target"]
    done = 0
    try:
        with pyogrio.open_arrow(
            target,
            batch_size=min(chunk_rows, FIRST_CHUNK_ROWS),
            use_pyarrow=True,
            return_fids=True,
            encoding=source.options.get("encoding"),
        ) as (meta, reader):
            geometry_name = meta["geometry_name"] or "wkb_geometry"
            fid_name = meta.get("fid_column") or "OGC_FID"
            for batch in _chunked_batches(reader, chunk_rows):
                names = batch.schema.names
                wkb = batch.column(geometry_name) if geometry_name in names else None
                fids = (
                    batch.column(fid_name).to_numpy(zero_copy_only=False)
                    if fid_name in names
                    else None
                )
                keep = [n for n in names if n not in (geometry_name, fid_name)]
                frame = batch.select(keep).to_pandas()
                if source.options.get("feature_ids") and fids is not None:
                    frame["id"] = fids.astype(str)
                xy = point_xy(wkb) if wkb is not None else None
                geometry = None if xy is not None else _geometries(wkb, len(frame))
                rows = np.arange(done + 1, done + len(frame) + 1, dtype=np.int64)
                done += len(frame)
                yield Chunk(
                    frame, geometry, rows, None if fids is None else fids.astype(str), xy=xy
                )
    except _GDAL_READ_ERRORS as exc:
        raise _gdal_error(source.path, source.format, exc) from None


def _chunked_batches(
    batches: Iterable[pa.RecordBatch], chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    """A stream's small batches as a reader's chunks: the first on its own, then joined into
    batches of `chunk_rows` (or more: the last one read may overshoot; the stream's last fewer)."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for number, batch in enumerate(batches):
        if number == 0:
            yield batch
            continue
        pending.append(batch)
        rows += batch.num_rows
        if rows >= chunk_rows:
            yield _joined(pending)
            pending, rows = [], 0
    if pending:
        yield _joined(pending)


def _joined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """Consecutive batches of one stream as one (its columns contiguous)."""
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _geometries(wkb: pa.Array | None, n: int) -> np.ndarray:
    """Shapely geometries of a WKB column (None where unreadable); all None without one."""
    if wkb is None:
        return np.full(n, None, dtype=object)
    return np.asarray(
        shapely.from_wkb(wkb.to_numpy(zero_copy_only=False), on_invalid="ignore"), dtype=object
    )


_WKB_POINT_LE = np.array([1, 1, 0, 0, 0], dtype=np.uint8)  # little-endian, type 1 (Point)


def point_xy(wkb: pa.Array) -> np.ndarray | None:
    """x/y (n × 2) of WKB geometries when every one is a plain little-endian 2D point, else None.

    Points are by far the commonest facility geometry, and reading their 21 bytes with numpy
    costs nothing next to building a million shapely objects only to ask them for x and y.
    Anything else (nulls, other types, Z/M, big-endian, NaN coordinates that GEOS reads as an
    empty point) is left to shapely.
    """
    if isinstance(wkb, pa.ChunkedArray):
        if wkb.num_chunks != 1:
            return None
        wkb = wkb.chunk(0)
    if isinstance(wkb, pa.ExtensionArray):
        wkb = wkb.storage
    n = len(wkb)
    if (
        n == 0
        or wkb.null_count
        or not (pa.types.is_binary(wkb.type) or pa.types.is_large_binary(wkb.type))
    ):
        return None
    _, offsets_buffer, data_buffer = wkb.buffers()
    offset_type = np.int64 if pa.types.is_large_binary(wkb.type) else np.int32
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[wkb.offset : wkb.offset + n + 1]
    if not bool(np.all(np.diff(offsets) == 21)):
        return None
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]].reshape(n, 21)
    if not bool(np.all(data[:, :5] == _WKB_POINT_LE)):
        return None
    xy = np.ascontiguousarray(data[:, 5:]).view("<f8").astype(np.float64)
    if bool(np.isnan(xy).any()):
        return None
    return xy


# --- GeoParquet --------------------------------------------------------------------------------


def _open_parquet(path: Path) -> Source:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise _gdal_error(path, "GeoParquet", exc) from None
    metadata = parquet.schema_arrow.metadata or {}
    geo_raw = metadata.get(b"geo")
    if geo_raw is None:
        raise IngestError(f"{path.name} is Parquet without GeoParquet 'geo' metadata")
    try:
        geo = json.loads(geo_raw)
        column = geo["primary_column"]
        spec = geo["columns"][column]
    except (ValueError, KeyError) as exc:
        raise IngestError(f"{path.name}: invalid GeoParquet metadata ({exc})") from None
    if spec.get("encoding", "WKB").upper() != "WKB":
        raise IngestError(f"{path.name}: geometry encoding {spec.get('encoding')!r}; only WKB")
    # GeoParquet: a missing "crs" means OGC:CRS84; an explicit null means unknown
    crs_json = spec.get("crs", "OGC:CRS84")
    declared = pyproj.CRS.from_user_input(crs_json) if crs_json is not None else None
    columns = [n for n in parquet.schema_arrow.names if n != column]
    return Source(
        path=path,
        format="geoparquet",
        columns=columns,
        has_geometry=True,
        crs=crs_mod.from_proj(declared) if declared is not None else None,
        total=parquet.metadata.num_rows,
        options={"geometry_column": column},
    )


def _read_parquet(source: Source, chunk_rows: int) -> Iterator[Chunk]:
    column = source.options["geometry_column"]
    done = 0
    try:
        parquet = pq.ParquetFile(source.path)
        batches = parquet.iter_batches(batch_size=min(chunk_rows, FIRST_CHUNK_ROWS))
        for batch in _chunked_batches(batches, chunk_rows):
            wkb = batch.column(column)
            frame = batch.select([n for n in batch.schema.names if n != column]).to_pandas()
            rows = np.arange(done + 1, done + len(frame) + 1, dtype=np.int64)
            done += len(frame)
            xy = point_xy(wkb)
            geometry = None if xy is not None else _geometries(wkb, len(frame))
            yield Chunk(frame, geometry, rows, xy=xy)
    except (pa.ArrowException, OSError, shapely.errors.GEOSException) as exc:
        raise _gdal_error(source.path, "GeoParquet", exc) from None


# --- CSV ---------------------------------------------------------------------------------------


def _detect_encoding(path: Path) -> str:
    """utf-8-sig with a BOM; utf-8 when the whole file decodes as UTF-8; else GB18030."""
    head = _head(path)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        try:
            fallback = codecs.getincrementaldecoder("gb18030")()
            with path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    fallback.decode(block)
                fallback.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise IngestError(
                f"{path.name}: text is neither UTF-8 nor GB18030 (byte {exc.start}); "
                "save it as UTF-8"
            ) from None
        return "gb18030"
    return "utf-8"


def _sniff_delimiter(text: str) -> str:
    lines = [line for line in text.splitlines()[:50] if line.strip()]
    if not lines:
        return ","
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:
        header = lines[0]
        return max(",;\t|", key=header.count)


def _open_csv(path: Path, encoding: str | None = None) -> Source:
    encoding = encoding or _detect_encoding(path)
    head = _head(path).decode(encoding, errors="ignore")
    delimiter = _sniff_delimiter(head)
    try:
        header = pd.read_csv(
            io.StringIO(head), sep=delimiter, nrows=0, dtype=str, engine="python"
        ).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as exc:
        raise IngestError(f"{path.name}: cannot read a CSV header: {exc}") from None
    columns = [str(c).strip() for c in header]
    if not columns or all(c.startswith("Unnamed") for c in columns):
        raise IngestError(f"{path.name}: no CSV header line")
    with path.open("rb") as handle:
        lines = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    return Source(
        path=path,
        format="csv",
        columns=columns,
        has_geometry=False,
        total=max(lines - 1, 0),
        options={"encoding": encoding, "delimiter": delimiter},
        row_label="line",
    )


def _read_csv(source: Source, chunk_rows: int) -> Iterator[Chunk]:
    done = 0
    try:
        reader = pd.read_csv(
            source.path,
            sep=source.options["delimiter"],
            encoding=source.options["encoding"],
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            chunksize=chunk_rows,
            skipinitialspace=True,
            on_bad_lines="error",
        )
        for frame in reader:
            frame.columns = [str(c).strip() for c in frame.columns]
            # row 1 is the header line: data rows are numbered as a spreadsheet shows them
            rows = np.arange(done + 2, done + len(frame) + 2, dtype=np.int64)
            done += len(frame)
            frame.index = pd.RangeIndex(len(frame))
            # cells an export protected from spreadsheets ('=…) read back as they were
            yield Chunk(csv_cells.unprotect_frame(frame), None, rows)
    except pd.errors.ParserError as exc:
        raise IngestError(f"{source.path.name}: malformed CSV: {exc}") from None
    except UnicodeDecodeError as exc:
        raise IngestError(f"{source.path.name}: bad text encoding: {exc}") from None


# --- Excel workbooks (.xlsx through openpyxl, .xls through xlrd) ------------------------------

_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
#: rows of a sheet looked at to find its header under title rows
_HEADER_SCAN_ROWS = 30


_HTML_HINT = re.compile(rb"^\s*<(!doctype html|html|table|meta|\?xml)", re.IGNORECASE)


def _not_a_workbook(path: Path, head: bytes) -> str:
    """What a file named like a workbook that is none is: web systems' "export to Excel" often
    writes a tab-separated text (read as CSV) or an HTML table (refused, saying what to do)."""
    text = head.removeprefix(b"\xef\xbb\xbf")
    if _HTML_HINT.match(text):
        raise IngestError(
            f"{path.name} is a web page (HTML) named like an Excel workbook: open it in Excel or "
            "WPS and save it as .xlsx, or as CSV"
        )
    if text.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "csv"  # Excel's own "Unicode text": UTF-16, tab-separated
    if b"\x00" not in text and (b"\t" in text or b"," in text):
        return "csv"  # a text table named .xls: its header and rows are lines
    raise IngestError(f"{path.name} is not a valid Excel workbook (corrupt or truncated?)")


def _is_xlsx(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return "xl/workbook.xml" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


class _Workbook:
    """The sheets of an .xlsx or .xls workbook, each read row by row (values only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.xls = _head(path).startswith(_OLE2_MAGIC)
        try:
            if self.xls:
                import xlrd

                self.book: Any = xlrd.open_workbook(str(path), on_demand=True)
                self.names = [str(n) for n in self.book.sheet_names()]
            else:
                import openpyxl

                # read-only: rows are streamed from the zip, never all held at once
                self.book = openpyxl.load_workbook(path, read_only=True, data_only=True)
                self.names = [str(n) for n in self.book.sheetnames]
        except Exception as exc:  # noqa: BLE001 - both libraries raise many kinds on bad files
            raise IngestError(
                f"cannot read {path.name} as an Excel workbook (corrupt or truncated?): {exc}"
            ) from None

    def rows(self, name: str) -> Iterator[tuple[Any, ...]]:
        """The sheet's rows from its first, as tuples of cell values (dates as datetimes)."""
        if self.xls:
            import xlrd

            sheet = self.book.sheet_by_name(name)
            for r in range(sheet.nrows):
                yield tuple(_xls_value(cell, self.book.datemode, xlrd) for cell in sheet.row(r))
            return
        yield from self.book[name].iter_rows(values_only=True)

    def size(self, name: str) -> int | None:
        """The sheet's row count when the file says it."""
        if self.xls:
            return int(self.book.sheet_by_name(name).nrows)
        rows = self.book[name].max_row
        return int(rows) if rows is not None else None

    def close(self) -> None:
        """Let go of the file."""
        if self.xls:
            self.book.release_resources()
        else:
            self.book.close()


def _xls_value(cell: Any, datemode: int, xlrd: Any) -> Any:
    if cell.ctype == xlrd.XL_CELL_DATE:
        return xlrd.xldate_as_datetime(cell.value, datemode)
    if cell.ctype == xlrd.XL_CELL_NUMBER and float(cell.value).is_integer():
        return int(cell.value)  # .xls stores every number as a float: 60001449.0 is an id
    if cell.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK):
        return None
    return cell.value


def _filled(row: tuple[Any, ...]) -> list[int]:
    return [j for j, v in enumerate(row) if v is not None and str(v).strip() != ""]


def find_header(rows: list[tuple[Any, ...]]) -> int | None:
    """The position of the header among a sheet's first rows (title rows above it skipped).

    The header is the first row of text cells as wide as the table: a title (merged cells hold
    their text in the first cell only) or a note fills one or two cells.
    """
    widths = [len(_filled(r)) for r in rows]
    if not widths or max(widths) == 0:
        return None
    wide = max(2, -(-max(widths) // 2))
    for i, row in enumerate(rows):
        cells = [row[j] for j in _filled(row)]
        if len(cells) >= wide and all(isinstance(c, str) for c in cells):
            return i
    return None


def _header_columns(row: tuple[Any, ...]) -> list[str]:
    columns: list[str] = []
    for j, value in enumerate(row):
        name = "" if value is None else str(value).strip()
        name = name or f"column {j + 1}"
        base, k = name, 1
        while name in columns:
            k += 1
            name = f"{base}.{k}"
        columns.append(name)
    return columns


def _sheet_table(
    book: _Workbook, name: str, header_row: int | None
) -> tuple[int, list[str]] | None:
    """(header row number, 1-based; columns) of a sheet, or None when it holds no table."""
    head = list(itertools.islice(book.rows(name), max(_HEADER_SCAN_ROWS, header_row or 0)))
    if header_row is not None:
        if header_row > len(head) or not _filled(head[header_row - 1]):
            return None
        position: int | None = header_row - 1
    else:
        position = find_header(head)
    if position is None:
        return None
    header = head[position]
    if position + 1 < len(head) and _completes(header, head[position + 1]):
        # a two-row header: 坐标 merged over 经度 | 纬度 on the row below
        below = head[position + 1]
        width = max(len(header), len(below))
        cells = [_cell_at(below, j) or _cell_at(header, j) for j in range(width)]
        return position + 2, _header_columns(tuple(cells))
    return position + 1, _header_columns(header)


def _cell_at(row: tuple[Any, ...], j: int) -> Any:
    return row[j] if j < len(row) and j in _filled(row) else None


def _completes(header: tuple[Any, ...], below: tuple[Any, ...]) -> bool:
    """Whether `below` is the lower row of a two-row header: text naming the columns the header
    leaves blank (under a cell merged across them), blank under the header's cells merged down."""
    upper, lower = set(_filled(header)), set(_filled(below))
    width = max(upper | lower, default=-1) + 1
    blanks = set(range(width)) - upper
    # text only under a merged cell: the blanks and the filled cell each run of them starts at
    # (a first record naming a place under an unnamed column is no header)
    merged = blanks | {j - 1 for j in blanks if j - 1 in upper}
    return (
        bool(blanks)
        and blanks <= lower <= merged
        and bool(upper - lower)
        and all(isinstance(below[j], str) for j in lower)
    )


def _open_excel(path: Path, sheet: str | None, header_row: int | None) -> Source:
    if header_row is not None and header_row < 1:
        raise IngestError("--header-row counts from 1 (the sheet's first row)")
    book = _Workbook(path)
    try:
        if sheet is not None:
            if sheet in book.names:
                chosen = [sheet]
            elif sheet.isdigit() and 1 <= int(sheet) <= len(book.names):
                chosen = [book.names[int(sheet) - 1]]
            else:
                raise IngestError(
                    f"--sheet {sheet}: {path.name} has no such sheet; its sheets are "
                    f"{', '.join(repr(n) for n in book.names)} (or give a number from 1)"
                )
        else:
            chosen = book.names
        tables = {n: t for n in chosen if (t := _sheet_table(book, n, header_row)) is not None}
        if not tables:
            where = f"sheet {chosen[0]!r}" if sheet is not None else path.name
            at = f" at row {header_row}" if header_row is not None else ""
            raise IngestError(f"{where} has no header row{at}: give --header-row N")
        # several sheets: the table is the one with place columns (an explanation sheet has
        # none), then the one with most rows
        name = max(tables, key=lambda n: (_has_position(tables[n][1]), book.size(n) or 0))
        header, columns = tables[name]
        total = book.size(name)
    finally:
        book.close()
    return Source(
        path=path,
        format="excel",
        columns=columns,
        has_geometry=False,
        total=None if total is None else max(total - header, 0),
        options={"sheet": name, "header_row": header},
        row_label="row",
    )


def _has_position(columns: list[str]) -> bool:
    lowered = {c.lower() for c in columns}
    return bool(lowered & set(WKT_NAMES)) or bool(lowered & set(X_NAMES) and lowered & set(Y_NAMES))


def _read_excel(source: Source, chunk_rows: int) -> Iterator[Chunk]:
    columns = source.columns
    header: int = source.options["header_row"]
    book = _Workbook(source.path)
    try:
        values: list[tuple[Any, ...]] = []
        numbers: list[int] = []
        width = len(columns)
        rows = itertools.islice(book.rows(source.options["sheet"]), header, None)
        for number, row in enumerate(rows, start=header + 1):
            if not _filled(row):
                continue  # blank rows between records are no records
            cells = tuple(row[:width]) + (None,) * (width - len(row))
            values.append(tuple(None if isinstance(c, str) and not c.strip() else c for c in cells))
            numbers.append(number)
            if len(values) >= chunk_rows:
                yield _excel_chunk(values, numbers, columns)
                values, numbers = [], []
        if values:
            yield _excel_chunk(values, numbers, columns)
    finally:
        book.close()


def _excel_chunk(values: list[tuple[Any, ...]], numbers: list[int], columns: list[str]) -> Chunk:
    frame = pd.DataFrame.from_records(values, columns=columns).astype(object)
    # row numbers as the spreadsheet shows them: what a user looks for
    return Chunk(frame, None, np.asarray(numbers, dtype=np.int64))


# --- Map-vendor POI search responses (Tencent, Amap) ------------------------------------------


def _vendor_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """Each JSON object of a file holding several one after another (object number, value)."""
    decoder = json.JSONDecoder()
    buffer = ""
    number = 0
    with path.open("r", encoding="utf-8-sig") as handle:
        eof = False
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                if eof:
                    return
                block = handle.read(1 << 20)
                eof = block == ""
                buffer += block
                continue
            try:
                value, end = decoder.raw_decode(buffer)
            except json.JSONDecodeError as exc:
                if not eof:
                    block = handle.read(1 << 20)
                    eof = block == ""
                    buffer += block
                    continue
                raise IngestError(
                    f"{path.name}: JSON object {number + 1} is truncated or invalid: {exc.msg} "
                    f"(line {exc.lineno} of that object)"
                ) from None
            number += 1
            yield number, value
            buffer = buffer[end:]


def _open_vendor(path: Path) -> Source:
    vendor = next((_vendor_of(obj) for _, obj in _vendor_objects(path)), None)
    return Source(
        path=path,
        format="vendor-json",
        columns=list(_VENDOR_COLUMNS),
        has_geometry=True,
        # Amap and Tencent answer in GCJ-02, Baidu in BD-09
        default_crs="bd09" if vendor == "baidu" else "gcj02",
        row_label="record",
    )


_VENDOR_COLUMNS = (
    "source_id",
    "name",
    "address",
    "phone",
    "opening_hours",
    "vendor_category",
    "vendor_type",
    "adcode",
    "city",
    "district",
)

#: the texts vendors put where they mean "no value" (Amap answers ``[]``)
_NO_VALUE_TEXTS = frozenset({"", "[]", "{}", "null", "None"})


def vendor_value(value: Any) -> str | None:
    """A vendor's field as text, or None for its ways of saying "no value".

    Amap answers a missing address or phone with an empty list ``[]`` (and several phones as a
    list or as ``a;b``); empty strings and the text ``"[]"`` mean nothing too.
    """
    if value is None:
        return None
    if isinstance(value, list):
        parts = [t for t in (vendor_value(v) for v in value) if t is not None]
        return ";".join(parts) or None
    if isinstance(value, dict):
        return None
    text = str(value).strip()
    return None if text in _NO_VALUE_TEXTS else text


def _vendor_of(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return None
    if "pois" in obj:
        return "amap"
    if "results" in obj or "result" in obj:
        return "baidu"
    if "data" in obj:
        return "tencent"
    return None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _amap_row(poi: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    # Amap v5 puts phone and hours under "business"; v3 has "tel" at the top
    business = _object(poi.get("business"))
    lng, _, lat = str(vendor_value(poi.get("location")) or "").partition(",")
    hours = _first(business.get("opentime_week"), business.get("opentime_today"))
    return (
        {"source_id": poi.get("id"), "name": poi.get("name"), "address": poi.get("address"),
         "phone": _first(business.get("tel"), poi.get("tel")), "opening_hours": hours,
         "vendor_category": poi.get("type"), "vendor_type": poi.get("typecode"),
         "adcode": poi.get("adcode"), "city": poi.get("cityname"), "district": poi.get("adname")},
        (_number(lng), _number(lat)),
    )  # fmt: skip


def _first(*values: Any) -> str | None:
    """The first of a vendor's fields that has a value ("[]" or [] is none: the next is tried)."""
    return next((text for v in values if (text := vendor_value(v)) is not None), None)


def _tencent_row(poi: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    location = poi.get("location") or {}
    ad = poi.get("ad_info") or {}
    return (
        {"source_id": poi.get("id"), "name": poi.get("title"), "address": poi.get("address"),
         "phone": poi.get("tel"), "opening_hours": None, "vendor_category": poi.get("category"),
         "vendor_type": poi.get("type"), "adcode": ad.get("adcode"), "city": ad.get("city"),
         "district": ad.get("district")},
        (_number(location.get("lng")), _number(location.get("lat"))),
    )  # fmt: skip


def _baidu_row(poi: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    # Baidu Place API v2/v3 (place/v2/search): BD-09 location, "uid" the POI's id
    location = _object(poi.get("location"))
    detail = _object(poi.get("detail_info"))
    return (
        {"source_id": poi.get("uid"), "name": poi.get("name"), "address": poi.get("address"),
         "phone": poi.get("telephone"), "opening_hours": detail.get("shop_hours"),
         "vendor_category": detail.get("tag") or detail.get("classified_poi_tag"),
         "vendor_type": detail.get("type"), "adcode": poi.get("adcode"),
         "city": poi.get("city"), "district": poi.get("area")},
        (_number(location.get("lng")), _number(location.get("lat"))),
    )  # fmt: skip


def _vendor_rows(number: int, obj: Any, path: Path) -> list[tuple[dict[str, Any], Any]]:
    if not isinstance(obj, dict):
        raise IngestError(f"{path.name}: JSON value {number} is not an object")
    status = obj.get("status")
    vendor = _vendor_of(obj)
    if vendor == "amap":  # status "1" is success
        if status is not None and str(status) != "1":
            raise IngestError(
                f"{path.name}: response {number} is an error (status {status}: {obj.get('info')})"
            )
        pois, convert = obj.get("pois"), _amap_row
    elif vendor in ("tencent", "baidu"):  # status 0 is success
        if status is not None and str(status) != "0":
            raise IngestError(
                f"{path.name}: response {number} is an error "
                f"(status {status}: {obj.get('message')})"
            )
        if vendor == "tencent":
            pois, convert = obj.get("data"), _tencent_row
        else:
            found = obj.get("results", obj.get("result"))
            pois, convert = ([found] if isinstance(found, dict) else found), _baidu_row
    else:
        raise IngestError(
            f"{path.name}: JSON object {number} is neither a Tencent (data[]), an Amap (pois[]) "
            "nor a Baidu (results[]) POI response"
        )
    out = []
    for poi in pois if isinstance(pois, list) else []:
        if isinstance(poi, dict):
            values, xy = convert(poi)
            out.append(({k: vendor_value(v) for k, v in values.items()}, xy))
    return out


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _read_vendor(source: Source, chunk_rows: int) -> Iterator[Chunk]:
    pending: list[tuple[dict[str, Any], Any]] = []
    done = 0

    def flush() -> Chunk:
        nonlocal done
        frame = pd.DataFrame([p[0] for p in pending], columns=list(_VENDOR_COLUMNS))
        xy = np.array([p[1] for p in pending], dtype=np.float64).reshape(-1, 2)
        geometry = shapely.points(xy)
        rows = np.arange(done + 1, done + len(frame) + 1, dtype=np.int64)
        done += len(frame)
        fids = frame["source_id"].to_numpy(dtype=object)
        pending.clear()
        return Chunk(frame, np.asarray(geometry, dtype=object), rows, fids)

    for number, obj in _vendor_objects(source.path):
        pending.extend(_vendor_rows(number, obj, source.path))
        if len(pending) >= chunk_rows:
            yield flush()
    if pending:
        yield flush()


# --- OpenStreetMap PBF (GDAL's OSM driver) -----------------------------------------------------

_OSM_GEOMETRY_LAYERS = ("points", "lines", "multipolygons")
_HSTORE_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"=>"((?:[^"\\]|\\.)*)"')
_HSTORE_UNESCAPE = re.compile(r"\\(.)")
#: OSM keys facilities are described with
_OSM_NAME_KEYS = ("name:zh-Hans", "name:zh", "name", "name:zh-Hant", "name:en")


def parse_hstore(text: str | None) -> dict[str, str]:
    """GDAL's other_tags text (``"k"=>"v","k2"=>"v2"``) as a dict."""
    if not text:
        return {}
    return {
        _HSTORE_UNESCAPE.sub(r"\1", k): _HSTORE_UNESCAPE.sub(r"\1", v)
        for k, v in _HSTORE_PAIR.findall(text)
    }


def _ogr_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _osm_where(rules: list[Mapping[str, tuple[str, ...] | None]], columns: set[str]) -> str:
    """An OGR SQL filter keeping features that may match a rule (checked exactly later)."""
    clauses = []
    for rule in rules:
        parts = []
        for key, values in rule.items():
            if key in columns:
                if values is None:
                    parts.append(f'"{key}" IS NOT NULL')
                else:
                    parts.append(f'"{key}" IN ({", ".join(_ogr_quote(v) for v in values)})')
            else:
                pattern = f'%"{key}"=>%'
                parts.append(f"other_tags LIKE {_ogr_quote(pattern)}")
        clauses.append("(" + " AND ".join(parts) + ")")
    return " OR ".join(clauses)


def _open_osm(path: Path, only: list[str] | None, lang: str) -> Source:
    try:
        available = {str(n) for n in pyogrio.list_layers(str(path))[:, 0]}
    except _GDAL_READ_ERRORS as exc:
        raise _gdal_error(path, "OSM PBF", exc) from None
    keys = only or list(layers.all_layers())
    return Source(
        path=path,
        format="osm",
        columns=["layer", "source_id", *_OSM_FIELD_COLUMNS],
        has_geometry=True,
        crs=crs_mod.parse_crs(crs_mod.WGS84),
        canonical=True,
        options={
            "layers": keys,
            "osm_layers": [n for n in _OSM_GEOMETRY_LAYERS if n in available],
            "lang": lang,
        },
    )


_OSM_FIELD_COLUMNS = ("name", "name_en", "address", "phone", "website", "opening_hours",
                      "accessible")  # fmt: skip


def _osm_address(tags: Mapping[str, str]) -> str | None:
    if tags.get("addr:full"):
        return tags["addr:full"]
    street = tags.get("addr:street") or tags.get("addr:place")
    number = tags.get("addr:housenumber")
    city = tags.get("addr:city")
    district = tags.get("addr:district")
    parts = [p for p in (city, district, street, number) if p]
    if not parts:
        return None
    if any("\u4e00" <= ch <= "\u9fff" for p in parts for ch in p):
        # Chinese addresses run from the largest unit to the smallest, unspaced
        return "".join(parts) + ("号" if number and not number.endswith("号") else "")
    line = " ".join(p for p in (street, number) if p)
    place = " ".join(p for p in (tags.get("addr:postcode"), city) if p)
    return ", ".join(p for p in (line, place) if p) or None


def osm_record(tags: Mapping[str, str], layer_key: str, lang: str) -> dict[str, Any]:
    """Facility fields and layer attributes of one OSM element's tags."""
    layer = layers.get_layer(layer_key)
    name = next((tags[k] for k in _OSM_NAME_KEYS if tags.get(k)), None)
    record: dict[str, Any] = {
        "name": name,
        "name_en": tags.get("name:en"),
        "address": _osm_address(tags),
        "phone": tags.get("phone") or tags.get("contact:phone"),
        "website": tags.get("website") or tags.get("contact:website"),
        "opening_hours": tags.get("opening_hours"),
        "accessible": tags.get("wheelchair"),
        "__unnamed__": name is None,
    }
    if name is None:
        # unnamed amenities (most toilets) are normal in OSM: call them by their kind
        record["name"] = layer.name(lang)
    for attr, value in layer.osm_attribute_values(tags).items():
        record[f"attr.{attr}"] = value
    return record


def _read_osm(source: Source, chunk_rows: int) -> Iterator[Chunk]:
    keys: list[str] = source.options["layers"]
    chosen = [layers.get_layer(k) for k in keys]
    rules = [rule for layer in chosen for rule in layer.osm_rules]
    if not rules:
        return
    done = 0
    for osm_layer in source.options["osm_layers"]:
        try:
            info = pyogrio.read_info(str(source.path), layer=osm_layer)
            columns = {str(c) for c in info["fields"]}
            where = _osm_where(rules, columns)
            with pyogrio.open_arrow(
                str(source.path), layer=osm_layer, where=where, batch_size=chunk_rows,
                use_pyarrow=True,
            ) as (meta, reader):  # fmt: skip
                geometry_name = meta["geometry_name"] or "wkb_geometry"
                for batch in reader:
                    table = batch.to_pylist()
                    records, geoms, fids = [], [], []
                    for feature in table:
                        tags = {
                            k: str(v)
                            for k, v in feature.items()
                            if k not in ("other_tags", "osm_id", "osm_way_id", geometry_name)
                            and v is not None
                        }
                        tags.update(parse_hstore(feature.get("other_tags")))
                        layer = next((la for la in chosen if la.matches_osm(tags)), None)
                        if layer is None:
                            continue
                        fid = _osm_id(osm_layer, feature)
                        record = osm_record(tags, layer.key, source.options["lang"])
                        record["layer"] = layer.key
                        record["source_id"] = fid
                        records.append(record)
                        geoms.append(feature[geometry_name])
                        fids.append(fid)
                    if not records:
                        continue
                    frame = pd.DataFrame.from_records(records)
                    rows = np.arange(done + 1, done + len(frame) + 1, dtype=np.int64)
                    done += len(frame)
                    geometry = shapely.from_wkb(np.array(geoms, dtype=object), on_invalid="ignore")
                    yield Chunk(frame, geometry, rows, np.array(fids, dtype=object))
        except _GDAL_READ_ERRORS as exc:
            raise _gdal_error(source.path, "OSM PBF", exc) from None


def _osm_id(osm_layer: str, feature: Mapping[str, Any]) -> str:
    if osm_layer == "points":
        return f"node/{feature['osm_id']}"
    if osm_layer == "lines":
        return f"way/{feature['osm_id']}"
    if feature.get("osm_way_id"):
        return f"way/{feature['osm_way_id']}"
    return f"relation/{feature['osm_id']}"


_READERS = {
    "csv": _read_csv,
    "excel": _read_excel,
    "vendor-json": _read_vendor,
    "geoparquet": _read_parquet,
    "osm": _read_osm,
    **{fmt: _read_gdal for fmt in _GDAL_FORMATS},
}
