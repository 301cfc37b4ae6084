"""One ingest run: read → map → convert → validate → COPY to staging → one upsert; record it.

Atomic by default: the whole run is one transaction, and any invalid row rolls it back.
``skip_invalid`` loads the valid rows; ``dry_run`` validates and counts, then rolls back. Every
run, failed ones included, is recorded in ``ingest_runs`` in a transaction of its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import shapely
from psycopg.rows import dict_row

import layers
from ingest import crs as crs_mod
from ingest import identity, load, transform, validate
from ingest.load import LoadCounts
from ingest.mapping import Mapping, resolve
from ingest.readers import CHUNK_ROWS, FIRST_CHUNK_ROWS, Chunk, Source, open_source
from ingest.report import MAX_STORED_ISSUES, IngestError, IngestReport, Issue
from ingest.runs import record_run

#: progress callback: (rows read so far, rows expected or None)
Progress = Callable[[int, int | None], None]


class IngestFailed(Exception):
    """A run that wrote nothing; its report says why (and is already recorded)."""

    def __init__(self, report: IngestReport) -> None:
        self.report = report
        super().__init__(report.failure_line())


@dataclass
class IngestOptions:
    """How to read and load one file."""

    mapping: Mapping = field(default_factory=Mapping)
    skip_invalid: bool = False
    allow_outside: bool = False
    full: bool = False
    dry_run: bool = False
    #: the district's extent (lon/lat); None: no extent check
    bbox: tuple[float, float, float, float] | None = None
    timezone: str = "Asia/Shanghai"
    #: language of names given to unnamed OSM elements
    lang: str = "zh-Hans"
    chunk_rows: int = CHUNK_ROWS
    #: an Excel workbook's sheet (name or 1-based number) and header row (1-based)
    sheet: str | None = None
    header_row: int | None = None
    #: the text encoding of a CSV file or a Shapefile's DBF (default: detected)
    encoding: str | None = None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


#: allocations from this size on are mapped on their own, and returned when freed (256 KiB)
_MMAP_THRESHOLD = 256 << 10
#: free memory at the top of the heap above this is returned to the system (1 MiB)
_TRIM_THRESHOLD = 1 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def return_freed_memory() -> None:
    """Make the process give freed chunk-sized buffers back to the system (idempotent).

    A load allocates and frees the same few MB-sized arrays per chunk, on three threads. By
    default glibc raises its mmap threshold each time such a block is freed, after which they
    come from per-thread heaps that keep what they once held, and Arrow's mimalloc pool keeps
    freed pages as well: peak RSS grew with the file. With a fixed threshold and Arrow on the
    system allocator a 200,000-row load peaked at 477 MB instead of 620 MB (25,000-row chunks).
    """
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # not glibc: nothing to tune
        mallopt = None
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


class _Rollback(Exception):
    """Leave the run's transaction without writing (failed or dry run)."""


def run_ingest(
    conn: psycopg.Connection[Any],
    path: Path,
    options: IngestOptions,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest one file; raises IngestFailed (after recording the run) when nothing was written."""
    started = time.monotonic()
    return_freed_memory()
    mapping = options.mapping
    source_name = mapping.source or path.stem
    report = IngestReport(path=str(path), source=source_name, layer=mapping.layer)
    # the file's hash (a second or so for a large file) is taken beside the load, not before it
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-sha256") as pool:
        digest = pool.submit(file_sha256, path) if path.is_file() else None
        try:
            _run(conn, path, options, source_name, report, progress)
        except IngestError as exc:
            report.outcome = "failed"
            report.reason = str(exc)
        except _Rollback:
            pass
        except psycopg.Error as exc:
            report.outcome = "failed"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            report.reason = f"the database refused the load, nothing written: {first}"
        if digest is not None:
            report.file_sha256 = digest.result()
    report.duration_s = time.monotonic() - started
    _record(conn, report)
    if report.outcome == "failed":
        raise IngestFailed(report)
    return report


def _run(
    conn: psycopg.Connection[Any],
    path: Path,
    options: IngestOptions,
    source_name: str,
    report: IngestReport,
    progress: Progress | None,
) -> None:
    mapping = options.mapping
    mapping.check()
    osm_layers = mapping.layer_keys() if mapping.layer else None
    source = open_source(
        path,
        osm_layers=osm_layers,
        lang=options.lang,
        sheet=options.sheet,
        header_row=options.header_row,
        encoding=options.encoding,
    )
    report.format = source.format
    report.row_label = source.row_label
    if source.format == "excel":
        report.sheet = source.options["sheet"]
    if source.canonical:
        # OSM: the reader has already chosen each element's layer from its tags
        mapping = mapping.merged(layer_field="layer")
    resolved = resolve(mapping, source.columns, has_geometry=source.has_geometry)
    explicit = crs_mod.parse_crs(mapping.crs) if mapping.crs else None
    choice = validate.CrsChoice(
        explicit=explicit,
        declared=source.crs,
        default=crs_mod.parse_crs(source.default_crs or crs_mod.WGS84),
        origin=mapping.origin_of("crs"),
    )
    report.crs = str(choice.fixed or choice.default)
    failed = False
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        fresh = load.begin(cur, source_name)
        # only a first load may be a bulk load (load.begin_bulk says when)
        bulk = load.begin_bulk(cur, source.total) if fresh else None
        tally = bulk.tally if bulk is not None else None
        try:
            writer = _Writer(cur)
            seen = _SeenIds()
            try:
                for chunk in _small_first(source.chunks(options.chunk_rows)):
                    records, rejected, chunk_failed = _chunk(
                        chunk, source, resolved, choice, options, source_name, report
                    )
                    report.read += len(chunk.frame)
                    records, duplicated = seen.check(records, report)
                    failed = failed or chunk_failed or duplicated
                    if not failed or options.skip_invalid:
                        if fresh:
                            writer.put(load.new_batch, records, source_name, tally=tally)
                        else:
                            # --full must not mark listed but rejected rows removed
                            listed = [sid for sid, _ in rejected] if options.full else []
                            writer.put(load.staging_batch, records, listed)
                    if progress is not None:
                        progress(report.read, source.total)
            except BaseException:
                writer.close(quiet=True)
                raise
            writer.close()
            if report.read == 0:
                raise IngestError(f"{path.name} holds no facilities (0 rows): nothing to load")
            if failed and not options.skip_invalid:
                report.outcome = "failed"
                report.reason = (
                    f"{report.rejected:,} of {report.read:,} row(s) invalid; nothing written "
                    "(fix them, or load the rest with --skip-invalid)"
                )
                raise _Rollback
            if not fresh and "source_id" not in resolved.field_columns:
                # no ids in the file: a re-surveyed place updates its facility (ingest.identity)
                report.extend(identity.match_moved(cur, source_name)[1])
            counts = writer.counts if fresh else load.upsert_staged(cur, source_name)
            report.inserted, report.updated = counts.inserted, counts.updated
            report.unchanged = counts.unchanged
            report.removed = load.finish(cur, source_name, full=options.full and not fresh)
            if options.dry_run:
                # rolling back restores a bulk load's indexes too: no need to build them
                report.outcome = "dry_run"
                raise _Rollback
            load.end_bulk(cur, bulk)
            report.outcome = "ok"
        finally:
            if tally is not None:
                tally.close()  # a process counting H3 cells stops with the load, however it ends


class _SeenIds:
    """Source ids met so far in the file (as 64-bit hashes) and the row each first came on.

    Two sorted numpy arrays, 16 bytes an id: a dict of Python ints took ~110 bytes an id
    (110 MB for a million rows).
    """

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.rows = np.empty(0, dtype=np.int64)

    def check(self, records: pd.DataFrame, report: IngestReport) -> tuple[pd.DataFrame, bool]:
        """The records without ids met before (each reported as a duplicate); any found?"""
        if records.empty:
            return records, False
        ids = records["source_id"].to_numpy(dtype=object)
        keys = pd.util.hash_array(ids)
        rows = records["row_no"].to_numpy(dtype=np.int64)
        # the first row of each id within the chunk (rows ascend within a chunk)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        first_in_chunk = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
        earlier = np.full(len(ids), -1, dtype=np.int64)
        starts = np.flatnonzero(first_in_chunk)
        group = np.cumsum(first_in_chunk) - 1
        earlier[order[~first_in_chunk]] = rows[order[starts[group[~first_in_chunk]]]]
        # ids met in earlier chunks
        at = np.searchsorted(self.keys, keys)
        found = at < len(self.keys)
        found[found] = self.keys[at[found]] == keys[found]
        earlier[found] = self.rows[at[found]]
        duplicate = earlier >= 0
        # the new ids join the sorted arrays in place (a linear merge, no re-sort)
        new = order[first_in_chunk & ~found[order]]
        where = np.searchsorted(self.keys, keys[new])
        self.keys = np.insert(self.keys, where, keys[new])
        self.rows = np.insert(self.rows, where, rows[new])
        if not duplicate.any():
            return records, False
        for i in np.flatnonzero(duplicate).tolist():
            report.add(
                Issue(
                    int(rows[i]),
                    None,
                    "source_id",
                    str(ids[i]),
                    f"duplicate id: row {int(earlier[i])} has it too",
                )  # fmt: skip
            )
        report.rejected += int(duplicate.sum())
        return records.loc[~duplicate], True


class _Writer:
    """Builds batches on one thread and sends them on another, while the next chunk is read.

    Three stages, so the database never waits on Python between two COPYs: the reading thread
    converts a chunk, the builder makes its CSV payloads (Arrow, mostly outside the GIL), the
    writer COPYs them. A first load's batches go straight into facilities; otherwise they are
    staged, and the caller upserts the whole staging table once the file is read. At most two
    batches wait to be sent: memory stays bounded however large the file.
    """

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur
        self.counts = LoadCounts()
        self.error: BaseException | None = None
        self.builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-builder")
        self.queue: queue.Queue[Future[load.Batch] | None] = queue.Queue(maxsize=2)
        self.thread = threading.Thread(target=self._loop, name="ingest-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (built := self.queue.get()) is not None:
            if self.error is not None:
                built.cancel()
                continue  # the run fails anyway: write nothing more
            try:
                counts = load.send(self.cur, built.result())
            except BaseException as exc:  # handed to the reading thread, which re-raises it
                self.error = exc
                continue
            for name in ("staged", "inserted", "updated", "unchanged"):
                setattr(self.counts, name, getattr(self.counts, name) + getattr(counts, name))

    def put(self, build: Callable[..., load.Batch], *args: Any, **kwargs: Any) -> None:
        """Queue `build(*args, **kwargs)`'s batch (blocks while two are waiting)."""
        if self.error is not None:
            raise self.error
        self.queue.put(self.builder.submit(build, *args, **kwargs))

    def close(self, *, quiet: bool = False) -> None:
        """Wait for the queued batches; re-raise the first error unless `quiet`."""
        self.queue.put(None)
        self.thread.join()
        self.builder.shutdown(wait=True, cancel_futures=True)
        if self.error is not None and not quiet:
            raise self.error


def _small_first(chunks: Iterator[Chunk], rows: int = FIRST_CHUNK_ROWS) -> Iterator[Chunk]:
    """The chunks, the first one in pieces of doubling size (5,000, 10,000, 20,000, …).

    Until its first rows arrive the database has nothing to do: small pieces first get it
    going sooner, and each piece is converted while the one before it is written.
    """
    for number, chunk in enumerate(chunks):
        n = len(chunk.frame)
        if number > 0:
            yield chunk
            continue
        start, size = 0, rows
        while n - start > 2 * size:
            yield _rows_of(chunk, start, start + size)
            start, size = start + size, 2 * size
        yield chunk if start == 0 else _rows_of(chunk, start, n)


def _rows_of(chunk: Chunk, start: int, stop: int) -> Chunk:
    """Rows start:stop of a chunk (a chunk of its own: index from 0)."""
    part = slice(start, stop)
    return Chunk(
        chunk.frame.iloc[part].reset_index(drop=True),
        None if chunk.geometry is None else chunk.geometry[part],
        chunk.rows[part],
        None if chunk.fids is None else chunk.fids[part],
        None if chunk.xy is None else chunk.xy[part],
    )


def _chunk(
    chunk: Chunk,
    source: Source,
    resolved: Any,
    choice: validate.CrsChoice,
    options: IngestOptions,
    source_name: str,
    report: IngestReport,
) -> tuple[pd.DataFrame, list[tuple[str, int | None]], bool]:
    """Map, convert, validate one chunk: (valid records, ids of rejected rows, any errors)."""
    can = transform.to_canonical(chunk, resolved, canonical_source=source.canonical)
    frame = can.frame
    issues: list[Issue] = list(can.issues)
    crs, crs_issues = choice.for_chunk(frame, can.crs_labels, resolved.crs_label)
    issues.extend(crs_issues)
    lon, lat, footprints = _positions(can, crs)
    # rows already refused are not checked for their position again
    reported = {i.row for i in issues if i.severity == "error"}
    checkable = ~frame["_row"].isin(reported).to_numpy()
    position_field = f"{resolved.x}/{resolved.y}" if resolved.x else (resolved.wkt or "geometry")
    issues.extend(
        validate.check_positions(
            frame, x=can.x, y=can.y, lon=lon, lat=lat, checkable=checkable, crs=crs,
            bbox=options.bbox, allow_outside=options.allow_outside, field=position_field,
        )
    )  # fmt: skip
    issues.extend(validate.check_fields(frame, resolved))
    issues.extend(_values(frame, resolved, options.timezone))
    has_layer = np.flatnonzero(frame["layer"].notna().to_numpy())
    attributes, attribute_issues = transform.attribute_json(frame, has_layer)
    issues.extend(attribute_issues)

    bad_rows = {i.row for i in issues if i.severity == "error"}
    bad = frame["_row"].isin(bad_rows).to_numpy()
    report.extend(issues)
    report.rejected += int(bad.sum())
    if "source_id" not in resolved.field_columns:
        frame["source_id"] = _generated_ids(frame, ~bad, lon, lat)
    keep = ~bad
    records = transform.records(
        frame if not bad.any() else frame.loc[keep].reset_index(drop=True),
        lon[keep],
        lat[keep],
        footprints[keep],
        attributes[keep],
        source=source_name,
    )
    return records, _rejected_ids(frame, bad), bool(bad.any())


def _positions(can: transform.Canonical, crs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WGS 84 lon, lat and footprint of each row; a shape's position is a point inside it.

    Points convert as arrays, shapes convert whole. For a shape `can.x`/`can.y` become its
    point's source coordinates, which the swap check works on.
    """
    lon, lat = crs_mod.to_wgs84(can.x, can.y, crs)
    footprints = np.full(len(can.frame), None, dtype=object)
    has_shape = ~pd.isna(can.shapes)
    if has_shape.any():
        shapes = crs_mod.geometries_to_wgs84(can.shapes[has_shape], crs)
        invalid = ~shapely.is_valid(shapes)
        if invalid.any():
            shapes[invalid] = shapely.make_valid(shapes[invalid])
        points = shapely.point_on_surface(shapes)
        lon[has_shape] = shapely.get_x(points)
        lat[has_shape] = shapely.get_y(points)
        footprints[has_shape] = shapes
        # the swap check works on source coordinates: use the representative point's
        src_points = shapely.point_on_surface(can.shapes[has_shape])
        can.x[has_shape] = shapely.get_x(src_points)
        can.y[has_shape] = shapely.get_y(src_points)
    return lon, lat, footprints


def _values(frame: pd.DataFrame, resolved: Any, timezone: str) -> list[Issue]:
    """Add the parsed hours, yes/no and times (once per distinct value); their warnings."""
    warnings: list[Issue] = []
    frame["opening_hours_norm"], bad_hours = transform.opening_hours(frame["opening_hours"])
    hours_field = resolved.field_columns.get("opening_hours", "opening_hours")
    for i in np.flatnonzero(bad_hours).tolist():
        warnings.append(
            transform.issue(
                frame,
                int(i),
                hours_field,
                frame["opening_hours"].iat[i],
                "not OSM opening_hours syntax: raw text kept, open_now unknown",
                "warning",
            )  # fmt: skip
        )
    frame["accessible_bool"] = transform.tristate(frame["accessible"])
    frame["verified_at_iso"], bad_times = transform.verified_times(frame["verified_at"], timezone)
    for i in np.flatnonzero(bad_times).tolist():
        warnings.append(
            transform.issue(
                frame,
                int(i),
                resolved.field_columns.get("verified_at", "verified_at"),
                frame["verified_at"].iat[i],
                "not a date/time: left empty",
                "warning",
            )  # fmt: skip
        )
    return warnings


def _generated_ids(
    frame: pd.DataFrame, ok: np.ndarray, lon: np.ndarray, lat: np.ndarray
) -> np.ndarray:
    """Source ids made from layer, name and position for the valid rows (None for the rest)."""
    ids = np.full(len(frame), None, dtype=object)
    ids[ok] = transform.generated_source_ids(
        frame["layer"].to_numpy(dtype=object)[ok].tolist(),
        frame["name"].to_numpy(dtype=object)[ok].tolist(),
        lon[ok],
        lat[ok],
    )
    return ids


def _rejected_ids(frame: pd.DataFrame, bad: np.ndarray) -> list[tuple[str, int | None]]:
    """(source id, row) of the rejected rows that have an id."""
    return [
        (str(sid), int(row))
        for sid, row in zip(
            frame["source_id"].to_numpy(dtype=object)[bad],
            frame["_row"].to_numpy()[bad],
            strict=True,
        )
        if not pd.isna(sid)
    ]


def _record(conn: psycopg.Connection[Any], report: IngestReport) -> None:
    """Record the run in ingest_runs (its own transaction: failed runs are kept too)."""
    record_run(
        conn,
        kind="facilities",
        path=report.path,
        outcome=report.outcome,
        duration_s=report.duration_s,
        counts=report.counts(),
        report=report.to_dict(max_issues=MAX_STORED_ISSUES),
        source=report.source,
        layer=report.layer,
        file_sha256=report.file_sha256,
    )


def record_failed(
    conn: psycopg.Connection[Any], path: Path, source: str | None, reason: str
) -> IngestReport:
    """Record a run that failed before it could start (an unreadable mapping file)."""
    report = IngestReport(path=str(path), source=source or path.stem, reason=reason)
    if path.is_file():
        report.file_sha256 = file_sha256(path)
    _record(conn, report)
    return report


def ingest_file(
    conn: psycopg.Connection[Any],
    path: Path,
    *,
    layer: str,
    source: str,
    full: bool = False,
    bbox: tuple[float, float, float, float] | None = None,
) -> LoadCounts:
    """Load one file of one layer (identity mapping) atomically and record the run."""
    layers.get_layer(layer)
    options = IngestOptions(mapping=Mapping(layer=layer, source=source), full=full, bbox=bbox)
    report = run_ingest(conn, path, options)
    return LoadCounts(
        staged=report.read - report.rejected,
        inserted=report.inserted,
        updated=report.updated,
        unchanged=report.unchanged,
        removed=report.removed,
    )
