"""What the hall, matter and document pages read (the pages themselves are in web/halls.py).

A matter's page gathers its documents by the five stages, the halls handling it (with their
windows and live wait), how to consult (the halls' phones and hours, the department) and its
evaluation figures; a document's page its matters and the facilities linked to it.
"""

from __future__ import annotations

from typing import Any

from geoservice.halls.cases import matter_figures
from geoservice.halls.common import DictConn, hall_loads, load_of
from geoservice.settings import Settings
from layers import CATEGORIES
from layers.facility import live

_MATTER = """
SELECT id, title, title_en, domain, department FROM matters WHERE id = %s
"""
_MATTER_DOCUMENTS = """
SELECT d.id, d.title, d.title_en, d.url, d.category, d.published_at, d.issuer, d.doc_number
  FROM document_matters dm JOIN documents d ON d.id = dm.document_id
 WHERE dm.matter_id = %s
 ORDER BY d.category, d.published_at DESC NULLS LAST, d.id
"""
_MATTER_HALLS = """
SELECT hm.hall_id, hm.queue_group, f.name, f.name_en, f.address, f.phone,
       coalesce(h.hours, f.opening_hours) AS hours,
       array_agg(w.name ORDER BY w.position) AS windows
  FROM hall_matters hm
  JOIN halls h ON h.facility_id = hm.hall_id
  JOIN facilities f ON f.id = hm.hall_id
  JOIN hall_window_matters wm ON wm.hall_id = hm.hall_id AND wm.matter_id = hm.matter_id
  JOIN hall_windows w ON w.hall_id = wm.hall_id AND w.id = wm.window_id
 WHERE hm.matter_id = %s
 GROUP BY hm.hall_id, hm.queue_group, f.name, f.name_en, f.address, f.phone, h.hours,
          f.opening_hours
 ORDER BY f.name
"""


async def matter_page(conn: DictConn, matter_id: str, settings: Settings) -> dict[str, Any] | None:
    """Everything /matters/{id} shows, or None for an unknown matter."""
    matter = await (await conn.execute(_MATTER, (matter_id,))).fetchone()
    if matter is None:
        return None
    stages: dict[str, list[dict[str, Any]]] = {c: [] for c in CATEGORIES}
    for doc in await (await conn.execute(_MATTER_DOCUMENTS, (matter_id,))).fetchall():
        stages.setdefault(doc["category"], []).append(dict(doc))
    halls = [dict(r) for r in await (await conn.execute(_MATTER_HALLS, (matter_id,))).fetchall()]
    loads = {r["id"]: load_of(r) for r in await hall_loads(conn, settings)}
    for hall in halls:
        hall["load"] = loads.get(hall["hall_id"], {"waiting": 0, "serving": 0,
                                                   "estimated_wait_min": 0})  # fmt: skip
    return {
        "matter": dict(matter),
        "stages": stages,
        "halls": halls,
        "figures": await matter_figures(conn, matter_id),
    }


_DOCUMENT = """
SELECT id, title, title_en, body, url, category, published_at, issuer, doc_number
  FROM documents WHERE id = %s
"""
_DOCUMENT_MATTERS = """
SELECT m.id, m.title, m.title_en, m.domain, m.department
  FROM document_matters dm JOIN matters m ON m.id = dm.matter_id
 WHERE dm.document_id = %s ORDER BY m.id
"""
_DOCUMENT_FACILITIES = f"""
WITH linked AS (
    SELECT l.facility_id FROM facility_matter_links l
     WHERE l.matter_id IN (SELECT matter_id FROM document_matters WHERE document_id = %(id)s)
    UNION
    SELECT facility_id FROM facility_document_links WHERE document_id = %(id)s
)
SELECT f.id, f.name, f.name_en, f.layer, f.address,
       EXISTS (SELECT 1 FROM halls h WHERE h.facility_id = f.id) AS is_hall
  FROM linked JOIN facilities f ON f.id = linked.facility_id
 WHERE {live("f")}
 ORDER BY f.layer, f.name
 LIMIT 200
"""


async def document_page(conn: DictConn, document_id: str) -> dict[str, Any] | None:
    """Everything /documents/{id} shows, or None for an unknown document."""
    document = await (await conn.execute(_DOCUMENT, (document_id,))).fetchone()
    if document is None:
        return None
    matters = await (await conn.execute(_DOCUMENT_MATTERS, (document_id,))).fetchall()
    facilities = await (await conn.execute(_DOCUMENT_FACILITIES, {"id": document_id})).fetchall()
    return {
        "document": dict(document),
        "matters": [dict(m) for m in matters],
        "facilities": [dict(f) for f in facilities],
    }


_HALL_MATTERS = """
SELECT hm.matter_id AS id, m.title, m.title_en FROM hall_matters hm
  JOIN matters m ON m.id = hm.matter_id WHERE hm.hall_id = %s ORDER BY hm.queue_group, m.id
"""


async def hall_matters(conn: DictConn, hall_id: str) -> list[dict[str, Any]]:
    """The matters a hall handles (id, titles), in queue-group order."""
    return [dict(r) for r in await (await conn.execute(_HALL_MATTERS, (hall_id,))).fetchall()]
