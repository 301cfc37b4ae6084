"""The SQL the web pages need (web/ itself runs none): legend counts, a facility's name, and
the standalone map's facility table with each facility's newest documents per stage.

``newest_documents`` is set-based: one query ranks the documents of every chosen facility at
once (``row_number()`` per facility and stage), over the same links and in the same order as
``geoservice.disclosures.routes.facility_disclosure_groups`` reads for one facility — the
documents of every matter linked to the facility (the ``facility_matter_links`` view) and those
naming it (``facility_document_links``), newest first, ties by id descending. A test compares
the two on the sample district.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, TypedDict

from psycopg import AsyncConnection, sql

from geoservice.api.features import FEATURE_COLUMNS
from layers import CATEGORIES
from layers.facility import live

_LAYER_COUNTS = sql.SQL(
    "SELECT f.layer, count(*)::int AS n FROM facilities f WHERE {live} GROUP BY f.layer"
).format(live=sql.SQL(live("f")))

_FACILITY_NAME = "SELECT f.name FROM facilities f WHERE f.id = %s"

_LIVE_FACILITIES = sql.SQL(
    "SELECT {columns} FROM facilities f WHERE {live} AND f.layer = ANY(%(layers)s)"
    " ORDER BY f.layer, f.id LIMIT %(limit)s"
).format(columns=sql.SQL(FEATURE_COLUMNS), live=sql.SQL(live("f")))

# The documents of each chosen facility (as _FACILITY_DOCUMENTS in
# geoservice.disclosures.routes for one), ranked per facility and stage. Facilities share their
# matters (rule links are layer-wide), so the documents of matters are ranked once per distinct
# set of matters, and a facility's candidates are its set's newest `per_stage` per stage plus
# the documents naming it: the newest k of a union are the newest k of (the newest k of one
# part ∪ the other part), so the result is the same as ranking all its documents, with ~15
# candidates per facility instead of every document of every matter. UNION: a document
# reaching a facility both ways counts once.
_NEWEST_DOCUMENTS = """
WITH chosen AS (
    SELECT DISTINCT c.id FROM unnest(%(ids)s::text[]) AS c(id)
), matter_sets AS (
    SELECT fm.facility_id, array_agg(fm.matter_id ORDER BY fm.matter_id) AS matters
    FROM facility_matter_links fm
    WHERE fm.facility_id IN (SELECT id FROM chosen)
    GROUP BY fm.facility_id
), set_documents AS (
    SELECT s.matters, d.id AS document_id,
           row_number() OVER (PARTITION BY s.matters, d.category
                              ORDER BY d.published_at DESC NULLS LAST, d.id DESC) AS n
    FROM (SELECT DISTINCT matters FROM matter_sets) s
    JOIN documents d ON EXISTS (
        SELECT 1 FROM document_matters dm
        WHERE dm.document_id = d.id AND dm.matter_id = ANY(s.matters)
    )
), candidates AS (
    SELECT ms.facility_id, sd.document_id
    FROM matter_sets ms JOIN set_documents sd ON sd.matters = ms.matters
    WHERE sd.n <= %(per_stage)s
    UNION
    SELECT l.facility_id, l.document_id
    FROM facility_document_links l
    WHERE l.facility_id IN (SELECT id FROM chosen)
), ranked AS (
    SELECT c.facility_id, d.id, d.category,
           row_number() OVER (PARTITION BY c.facility_id, d.category
                              ORDER BY d.published_at DESC NULLS LAST, d.id DESC) AS n
    FROM candidates c JOIN documents d ON d.id = c.document_id
)
SELECT r.facility_id, d.id, d.title, d.url, d.category, d.published_at
FROM ranked r JOIN documents d ON d.id = r.id
WHERE r.n <= %(per_stage)s
ORDER BY r.facility_id, r.category, r.n
"""


class StageDocument(TypedDict):
    """One disclosure document as the standalone map lists it under a facility."""

    id: str
    title: str
    url: str | None
    published_at: date | None


async def layer_counts(conn: AsyncConnection[dict[str, Any]]) -> dict[str, int]:
    """Live (not removed) facilities per layer; layers without any are absent."""
    cursor = await conn.execute(_LAYER_COUNTS)
    return {row["layer"]: row["n"] for row in await cursor.fetchall()}


async def facility_name(conn: AsyncConnection[dict[str, Any]], facility_id: str) -> str | None:
    """The facility's name, removed facilities included (printed QR codes keep working); None
    when no facility has this id."""
    cursor = await conn.execute(_FACILITY_NAME, (facility_id,))
    row = await cursor.fetchone()
    return None if row is None else str(row["name"])


async def live_facility_rows(
    conn: AsyncConnection[dict[str, Any]], layer_keys: Sequence[str], *, limit: int
) -> list[dict[str, Any]]:
    """Live facilities of these layers as feature rows (FEATURE_COLUMNS), by layer then id; at
    most `limit`."""
    cursor = await conn.execute(_LIVE_FACILITIES, {"layers": list(layer_keys), "limit": limit})
    return await cursor.fetchall()


async def newest_documents(
    conn: AsyncConnection[dict[str, Any]], facility_ids: Sequence[str], *, per_stage: int
) -> dict[str, dict[str, list[StageDocument]]]:
    """Facility id → stage → its newest `per_stage` documents, newest first (ties: id
    descending), the stages in CATEGORIES order; facilities without documents are absent."""
    found: dict[str, dict[str, list[StageDocument]]] = {}
    if not facility_ids or per_stage <= 0:
        return found
    cursor = await conn.execute(
        _NEWEST_DOCUMENTS, {"ids": list(facility_ids), "per_stage": per_stage}
    )
    for row in await cursor.fetchall():
        if row["category"] not in CATEGORIES:
            continue
        stages = found.setdefault(row["facility_id"], {})
        stages.setdefault(row["category"], []).append(
            StageDocument(
                id=row["id"], title=row["title"], url=row["url"], published_at=row["published_at"]
            )
        )
    # the stages in the order of the five disclosures (the query sorts them by name)
    return {
        facility: {c: stages[c] for c in CATEGORIES if c in stages}
        for facility, stages in found.items()
    }
