"""The one writer of ``ingest_runs``: every load, of facilities or of the disclosure catalogue.

Each run, failed ones included, is recorded in a transaction of its own, so a run whose load
was rolled back still leaves its row (and its report of what was refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

#: the counts a run records; a loader leaves out those it does not keep (recorded as 0)
RUN_COUNTS = ("read", "inserted", "updated", "unchanged", "removed", "rejected", "warnings")

_INSERT = """
INSERT INTO ingest_runs (kind, source, layer, path, file_sha256, finished_at, duration_s,
    read, inserted, updated, unchanged, removed, rejected, warnings, outcome, report)
VALUES (%(kind)s, %(source)s, %(layer)s, %(path)s, %(file_sha256)s, now(), %(duration_s)s,
    %(read)s, %(inserted)s, %(updated)s, %(unchanged)s, %(removed)s, %(rejected)s,
    %(warnings)s, %(outcome)s, %(report)s)
"""


def record_run(
    conn: psycopg.Connection[Any],
    *,
    kind: str,
    path: str,
    outcome: str,
    duration_s: float,
    counts: Mapping[str, int],
    report: dict[str, Any],
    source: str | None = None,
    layer: str | None = None,
    file_sha256: str | None = None,
) -> None:
    """Write one run's row in ingest_runs (its own transaction: failed runs are kept too)."""
    with conn.transaction():
        conn.execute(
            _INSERT,
            {
                "kind": kind,
                "source": source,
                "layer": layer,
                "path": path,
                "file_sha256": file_sha256,
                "duration_s": duration_s,
                **{name: counts.get(name, 0) for name in RUN_COUNTS},
                "outcome": outcome,
                "report": Jsonb(report),
            },
        )
