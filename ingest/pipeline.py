"""Read a file, transform it to records, load it; record the run in ingest_runs."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import psycopg
import pyogrio
from psycopg.types.json import Jsonb

from ingest.load import LoadCounts, load_records
from ingest.transform import records_from_frame


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def ingest_file(
    conn: psycopg.Connection[Any], path: Path, *, layer: str, source: str, full: bool = False
) -> LoadCounts:
    """Load one file of one layer (identity mapping) atomically and record the run."""
    started = time.monotonic()
    frame = pyogrio.read_dataframe(path)
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        frame = frame.to_crs(4326)
    records = records_from_frame(frame, layer_key=layer, source=source)
    counts = load_records(conn, records, source, full=full)
    with conn.transaction():
        conn.execute(
            """
            INSERT INTO ingest_runs (kind, source, layer, path, file_sha256, finished_at,
                duration_s, read, inserted, updated, unchanged, removed, outcome, report)
            VALUES ('facilities', %s, %s, %s, %s, now(), %s, %s, %s, %s, %s, %s, 'ok', %s)
            """,
            (
                source,
                layer,
                str(path),
                file_sha256(path),
                time.monotonic() - started,
                counts.staged,
                counts.inserted,
                counts.updated,
                counts.unchanged,
                counts.removed,
                Jsonb({}),
            ),  # fmt: skip
        )
    return counts
