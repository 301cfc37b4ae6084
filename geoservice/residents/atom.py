"""Atom feeds (RFC 4287): a resident's private feed and public feeds per facility and matter.

- ``GET /api/v1/me/feed.atom?token=…``: the resident's feed; ``token`` is the private feed key
  shown on ``/me`` (a feed reader cannot send a bearer header), or a session token.
- ``GET /feeds/facilities/{id}.atom``: the facility's disclosure documents (of the matters it
  handles and those naming it) and its closings, reopenings and removal.
- ``GET /feeds/matters/{id}.atom``: the matter's documents.

Entries link to the document, facility or appointment pages; ids are stable tag URIs.
"""

from __future__ import annotations

import hmac
from datetime import UTC, date, datetime, time
from typing import Any
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import Response

from geoservice.api.deps import PoolDep, PrimaryPoolDep, SettingsDep
from geoservice.api.errors import NotFound, Unauthorized
from geoservice.residents.feed import FEED_PAGE, NO_CURSOR, fan_out_async, item_json
from geoservice.residents.signin import resident_for_token

router = APIRouter(tags=["residents"])

ATOM = "http://www.w3.org/2005/Atom"
MEDIA_TYPE = "application/atom+xml; charset=utf-8"
ENTRIES = 50

_BY_FEED_KEY = "SELECT id, lang, feed_key FROM residents WHERE feed_key = %(key)s"
_FACILITY = "SELECT id, name, updated_at FROM facilities WHERE id = %(id)s"
_MATTER = "SELECT id, title, updated_at FROM matters WHERE id = %(id)s"
_DOCUMENT_COLUMNS = "d.id, d.title, d.category, d.published_at, d.updated_at, d.issuer"
_FACILITY_ENTRIES = f"""
WITH docs AS (
    SELECT dm.document_id FROM document_matters dm
    WHERE dm.matter_id IN (SELECT matter_id FROM facility_matter_links WHERE facility_id = %(id)s)
    UNION
    SELECT l.document_id FROM facility_document_links l WHERE l.facility_id = %(id)s
)
SELECT {_DOCUMENT_COLUMNS}, NULL::text AS kind, NULL::bigint AS event_id
FROM docs JOIN documents d ON d.id = docs.document_id
UNION ALL
SELECT NULL, e.title, NULL, NULL, e.at, e.detail, e.kind, e.id
FROM resident_events e
WHERE e.facility_id = %(id)s
  AND e.kind IN ('facility_closed', 'facility_reopened', 'facility_removed')
ORDER BY updated_at DESC LIMIT {ENTRIES}
"""
_MATTER_ENTRIES = f"""
SELECT {_DOCUMENT_COLUMNS} FROM document_matters dm JOIN documents d ON d.id = dm.document_id
WHERE dm.matter_id = %(id)s ORDER BY d.updated_at DESC, d.id LIMIT {ENTRIES}
"""

_EVENT_WORDS = {
    "facility_closed": "temporarily closed",
    "facility_reopened": "reopened",
    "facility_removed": "removed",
}


def _stamp(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, date):
        moment = datetime.combine(value, time(), tzinfo=UTC)
    else:
        moment = datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def atom_document(
    *, feed_id: str, title: str, self_url: str, page_url: str, updated: Any,
    entries: list[dict[str, Any]], lang: str = "zh-Hans", author: str = "servicemap",
) -> bytes:  # fmt: skip
    """A complete Atom feed: entries are ``{id, title, url, updated, summary?, published?}``."""
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed", {"{http://www.w3.org/XML/1998/namespace}lang": lang})
    ET.SubElement(feed, f"{{{ATOM}}}id").text = feed_id
    ET.SubElement(feed, f"{{{ATOM}}}title").text = title
    newest = max([updated, *[e["updated"] for e in entries]], key=_stamp, default=updated)
    ET.SubElement(feed, f"{{{ATOM}}}updated").text = _stamp(newest)
    ET.SubElement(ET.SubElement(feed, f"{{{ATOM}}}author"), f"{{{ATOM}}}name").text = author
    ET.SubElement(feed, f"{{{ATOM}}}link", {"rel": "self", "href": self_url,
                                             "type": "application/atom+xml"})  # fmt: skip
    ET.SubElement(feed, f"{{{ATOM}}}link", {"rel": "alternate", "href": page_url,
                                             "type": "text/html"})  # fmt: skip
    for item in entries:
        entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
        ET.SubElement(entry, f"{{{ATOM}}}id").text = item["id"]
        ET.SubElement(entry, f"{{{ATOM}}}title").text = item["title"]
        ET.SubElement(entry, f"{{{ATOM}}}updated").text = _stamp(item["updated"])
        if item.get("published") is not None:
            ET.SubElement(entry, f"{{{ATOM}}}published").text = _stamp(item["published"])
        ET.SubElement(entry, f"{{{ATOM}}}link", {"rel": "alternate", "href": item["url"],
                                                  "type": "text/html"})  # fmt: skip
        if item.get("summary"):
            ET.SubElement(entry, f"{{{ATOM}}}summary").text = item["summary"]
    body: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return body


def _tag(public_url: str, what: str) -> str:
    host = public_url.split("//", 1)[-1].split("/", 1)[0].split(":", 1)[0] or "servicemap"
    return f"tag:{host},2026:{what}"


def _atom(body: bytes, *, private: bool) -> Response:
    cache = "private, no-store" if private else "public, max-age=300"
    return Response(body, media_type=MEDIA_TYPE, headers={"Cache-Control": cache})


def _document_entry(row: dict[str, Any], public_url: str) -> dict[str, Any]:
    return {
        "id": _tag(public_url, f"document/{row['id']}/{_stamp(row['updated_at'])}"),
        "title": row["title"],
        "url": f"{public_url}/documents/{row['id']}",
        "updated": row["updated_at"],
        "published": row["published_at"],
        "summary": " · ".join(str(v) for v in (row["category"], row["issuer"]) if v),
    }


@router.get("/api/v1/me/feed.atom", response_class=Response)
async def my_feed_atom(
    pool: PoolDep,
    primary: PrimaryPoolDep,
    settings: SettingsDep,
    token: str = Query(min_length=8, max_length=200, description="the private feed key"),
) -> Response:
    """The resident's feed as Atom, at a private URL."""
    public_url = settings.service.public_url
    async with primary.connection() as conn:
        row = await (await conn.execute(_BY_FEED_KEY, {"key": token})).fetchone()
    if row is not None and hmac.compare_digest(str(row["feed_key"]), token):
        resident_id, lang = int(row["id"]), str(row["lang"])
    else:
        resident = await resident_for_token(primary, token, settings)
        if resident is None:
            raise Unauthorized("unknown feed key; copy the feed address from your page again")
        resident_id, lang = resident.id, resident.lang
    await fan_out_async(primary, settings.residents.max_radius_m)
    params = {"r": resident_id, "before": NO_CURSOR, "limit": ENTRIES}
    async with pool.connection() as conn:
        rows = await (await conn.execute(FEED_PAGE, params)).fetchall()
    entries = []
    for r in rows:
        item = item_json(r, lang, public_url)
        entries.append({"id": _tag(public_url, f"feed-item/{r['id']}"), "title": item["title"],
                        "url": item["url"], "updated": r["created_at"],
                        "published": r["published_at"], "summary": item["reason"]})  # fmt: skip
    body = atom_document(
        feed_id=_tag(public_url, f"resident/{resident_id}"),
        title="servicemap",
        self_url=f"{public_url}/api/v1/me/feed.atom",
        page_url=f"{public_url}/me",
        updated=rows[0]["created_at"] if rows else None,
        entries=entries,
        lang=lang,
    )
    return _atom(body, private=True)


@router.get("/feeds/facilities/{facility_id}.atom", response_class=Response)
async def facility_atom(
    pool: PoolDep, settings: SettingsDep, facility_id: str = PathParam(max_length=200)
) -> Response:
    """A facility's disclosure documents and status changes as Atom (public)."""
    public_url = settings.service.public_url
    async with pool.connection() as conn:
        facility = await (await conn.execute(_FACILITY, {"id": facility_id})).fetchone()
        if facility is None:
            raise NotFound(f"no facility with id {facility_id!r}")
        rows = await (await conn.execute(_FACILITY_ENTRIES, {"id": facility_id})).fetchall()
    entries = []
    for r in rows:
        if r["kind"] is None:
            entries.append(_document_entry(r, public_url))
        else:
            what = _EVENT_WORDS.get(r["kind"], r["kind"])
            entries.append({"id": _tag(public_url, f"event/{r['event_id']}"),
                            "title": f"{r['title']}: {what}",
                            "url": f"{public_url}/facilities/{facility_id}",
                            "updated": r["updated_at"], "summary": r["issuer"]})  # fmt: skip
    body = atom_document(
        feed_id=_tag(public_url, f"facility/{facility_id}"),
        title=str(facility["name"]),
        self_url=f"{public_url}/feeds/facilities/{facility_id}.atom",
        page_url=f"{public_url}/facilities/{facility_id}",
        updated=facility["updated_at"],
        entries=entries,
    )
    return _atom(body, private=False)


@router.get("/feeds/matters/{matter_id}.atom", response_class=Response)
async def matter_atom(
    pool: PoolDep, settings: SettingsDep, matter_id: str = PathParam(max_length=200)
) -> Response:
    """A matter's disclosure documents as Atom (public), newest first."""
    public_url = settings.service.public_url
    async with pool.connection() as conn:
        matter = await (await conn.execute(_MATTER, {"id": matter_id})).fetchone()
        if matter is None:
            raise NotFound(f"no matter with id {matter_id!r}")
        rows = await (await conn.execute(_MATTER_ENTRIES, {"id": matter_id})).fetchall()
    body = atom_document(
        feed_id=_tag(public_url, f"matter/{matter_id}"),
        title=str(matter["title"]),
        self_url=f"{public_url}/feeds/matters/{matter_id}.atom",
        page_url=f"{public_url}/matters/{matter_id}",
        updated=matter["updated_at"],
        entries=[_document_entry(r, public_url) for r in rows],
    )
    return _atom(body, private=False)
