"""Disclosure documents: the catalogue API and a facility's documents by the five stages.

Both directions of the facility ↔ matter ↔ document links (see geoservice.disclosures.linking):
``facility_disclosures`` (a facility's documents, used by GET /api/v1/facilities/{id} and the
facility page) and GET /api/v1/disclosures/{id} (a document's facilities as GeoJSON).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Response
from psycopg import AsyncConnection, sql

from geoservice.api.deps import PoolDep, SettingsDep, parse_layer
from geoservice.api.errors import InvalidParameter, NotFound
from geoservice.api.features import FEATURE_COLUMNS, feature_collection, json_response, to_feature
from geoservice.toilets.live import attach
from layers import CATEGORIES, DOMAINS
from layers.facility import live

router = APIRouter(tags=["disclosures"])

#: documents per stage in a facility's groups; the rest are paged by /api/v1/disclosures
PER_GROUP = 20
MAX_ID_LENGTH = 200
MAX_QUERY_LENGTH = 100
MAX_LIMIT = 100
MAX_OFFSET = 100_000
MAX_FACILITIES_LIMIT = 1000

# documents of a facility: those of every matter linked to it, and those naming it
_FACILITY_DOCUMENTS = """
WITH fm AS (
    SELECT matter_id FROM facility_matter_links WHERE facility_id = %(id)s
), docs AS (
    SELECT dm.document_id FROM document_matters dm WHERE dm.matter_id IN (SELECT matter_id FROM fm)
    UNION
    SELECT l.document_id FROM facility_document_links l WHERE l.facility_id = %(id)s
)
"""

_FACILITY_GROUPS = (
    _FACILITY_DOCUMENTS
    + """
, ranked AS (
    SELECT d.id, d.title, d.url, d.category, d.published_at,
           row_number() OVER (PARTITION BY d.category
                              ORDER BY d.published_at DESC NULLS LAST, d.id DESC) AS n,
           count(*) OVER (PARTITION BY d.category) AS total
    FROM docs JOIN documents d ON d.id = docs.document_id
)
SELECT r.id, r.title, r.url, r.category, r.published_at, r.total,
       m.id AS matter_id, m.title AS matter_title, m.title_en AS matter_title_en,
       m.domain AS matter_domain
FROM ranked r
LEFT JOIN LATERAL (
    SELECT m.id, m.title, m.title_en, m.domain
    FROM document_matters dm JOIN matters m ON m.id = dm.matter_id
    WHERE dm.document_id = r.id
    ORDER BY (dm.matter_id IN (SELECT matter_id FROM fm)) DESC, dm.matter_id
    LIMIT 1
) m ON true
WHERE r.n <= %(limit)s
ORDER BY r.category, r.n
"""
)

# the matters of documents, as a JSON list (alias d for documents)
_MATTERS_OF = """
(SELECT coalesce(jsonb_agg(jsonb_build_object('id', m.id, 'title', m.title,
                                              'title_en', m.title_en, 'domain', m.domain)
                           ORDER BY m.id), '[]'::jsonb)
 FROM document_matters dm JOIN matters m ON m.id = dm.matter_id
 WHERE dm.document_id = d.id) AS matters
"""

_DOCUMENT_COLUMNS = """
d.id, d.title, d.title_en, d.url, d.category, d.published_at, d.issuer, d.doc_number
"""


def _matter(row: dict[str, Any]) -> dict[str, Any] | None:
    if row.get("matter_id") is None:
        return None
    return {
        "id": row["matter_id"],
        "title": row["matter_title"],
        "title_en": row["matter_title_en"],
        "domain": row["matter_domain"],
    }


async def facility_disclosure_groups(
    conn: AsyncConnection[dict[str, Any]], facility_id: str, *, limit: int = PER_GROUP
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """(the five groups, newest first and at most `limit` each; total documents per stage)."""
    groups: dict[str, list[dict[str, Any]]] = {category: [] for category in CATEGORIES}
    totals = dict.fromkeys(CATEGORIES, 0)
    cursor = await conn.execute(_FACILITY_GROUPS, {"id": facility_id, "limit": limit})
    for row in await cursor.fetchall():
        category = row["category"]
        if category not in groups:
            continue
        totals[category] = int(row["total"])
        groups[category].append(
            {
                "id": row["id"],
                "title": row["title"],
                "url": row["url"],
                "published_at": row["published_at"].isoformat() if row["published_at"] else None,
                "matter": _matter(row),
            }
        )
    return groups, totals


async def facility_disclosures(
    conn: AsyncConnection[dict[str, Any]], facility_id: str
) -> dict[str, list[dict[str, Any]]]:
    """A facility's documents grouped by the five stages, newest first.

    Each item: ``{id, title, url, published_at, matter}`` (``matter``: ``{id, title, title_en,
    domain}`` of the matter through which the document reaches the facility). At most
    PER_GROUP per stage; `facility_disclosure_groups` also says how many there are, and
    ``GET /api/v1/disclosures?facility=ID&category=STAGE`` pages through all of them.
    """
    groups, _ = await facility_disclosure_groups(conn, facility_id)
    return groups


def _document(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "title": row["title"],
        "title_en": row["title_en"],
        "url": row["url"],
        "category": row["category"],
        "published_at": row["published_at"].isoformat() if row["published_at"] else None,
        "issuer": row["issuer"],
        "doc_number": row["doc_number"],
        "matters": row["matters"],
        "links": [{"rel": "self", "href": f"/api/v1/disclosures/{row['id']}"}],
    }


def _choice(value: str | None, allowed: dict[str, Any], parameter: str) -> str | None:
    if value is None:
        return None
    if value not in allowed:
        raise InvalidParameter(f"{parameter} {value!r} is not allowed; one of {', '.join(allowed)}")
    return value


def _no_nul(value: str | None, parameter: str) -> None:
    """PostgreSQL text cannot hold NUL: refuse it as a bad parameter rather than fail."""
    if value is not None and "\x00" in value:
        raise InvalidParameter(f"{parameter} must not contain NUL characters")


def _like(text: str) -> str:
    """An ILIKE pattern matching `text` literally anywhere."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@router.get(
    "/api/v1/disclosures",
    summary="Disclosure documents, newest first; filter by stage, domain, matter, facility, text",
)
async def list_disclosures(
    pool: PoolDep,
    category: Annotated[
        str | None, Query(max_length=20, description=f"stage: {', '.join(CATEGORIES)}")
    ] = None,
    domain: Annotated[
        str | None, Query(max_length=40, description=f"domain: {', '.join(DOMAINS)}")
    ] = None,
    matter: Annotated[str | None, Query(max_length=MAX_ID_LENGTH, description="matter id")] = None,
    facility: Annotated[
        str | None,
        Query(max_length=MAX_ID_LENGTH, description="only documents reaching this facility"),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_QUERY_LENGTH,
            description="text in the title or document number",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    """A page of documents with their matters, the total matched, and a next link."""
    _choice(category, CATEGORIES, "category")
    _choice(domain, DOMAINS, "domain")
    for value, parameter in ((matter, "matter"), (facility, "facility"), (q, "q")):
        _no_nul(value, parameter)
    chosen = {k: v for k, v in {"category": category, "domain": domain, "matter": matter,
                                "facility": facility, "q": q}.items() if v}  # fmt: skip
    page, count, params = _document_queries(chosen)
    async with pool.connection() as conn:
        if facility:
            cursor = await conn.execute("SELECT 1 FROM facilities WHERE id = %s", (facility,))
            if await cursor.fetchone() is None:
                raise NotFound(f"no facility with id {facility!r}")
        rows = await (
            await conn.execute(page, {**params, "limit": limit, "offset": offset})
        ).fetchall()
        total_row = await (await conn.execute(count, params)).fetchone()
    total = int(total_row["n"]) if total_row else 0
    return json_response(
        {
            "documents": [_document(row) for row in rows],
            "numberMatched": total,
            "numberReturned": len(rows),
            "limit": limit,
            "offset": offset,
            "links": _page_links(chosen, limit, offset, len(rows), total),
        }
    )


#: each filter of GET /api/v1/disclosures as a condition on documents ``d``
_DOCUMENT_FILTERS = {
    "category": "d.category = %(category)s",
    "domain": "EXISTS (SELECT 1 FROM document_matters dm JOIN matters m ON m.id = dm.matter_id"
    " WHERE dm.document_id = d.id AND m.domain = %(domain)s)",
    "matter": "EXISTS (SELECT 1 FROM document_matters dm"
    " WHERE dm.document_id = d.id AND dm.matter_id = %(matter)s)",
    "q": "(d.title ILIKE %(q)s OR d.title_en ILIKE %(q)s OR d.doc_number ILIKE %(q)s)",
    # the documents reaching the facility come from _FACILITY_DOCUMENTS's CTE ``docs``
    "facility": "d.id IN (SELECT document_id FROM docs)",
}


def _document_queries(
    chosen: dict[str, str],
) -> tuple[sql.Composed, sql.Composed, dict[str, Any]]:
    """(page query, count query, their parameters) for the chosen filters."""
    conditions = [sql.SQL(_DOCUMENT_FILTERS[name]) for name in chosen]
    where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("TRUE")
    params: dict[str, Any] = {k: v for k, v in chosen.items() if k not in ("q", "facility")}
    if "q" in chosen:
        params["q"] = _like(chosen["q"].strip())
    prefix = sql.SQL("")
    if "facility" in chosen:
        prefix = sql.SQL(_FACILITY_DOCUMENTS)
        params["id"] = chosen["facility"]
    page = sql.SQL(
        "{prefix} SELECT {columns}, {matters} FROM documents d WHERE {where} "
        "ORDER BY d.published_at DESC NULLS LAST, d.id DESC LIMIT %(limit)s OFFSET %(offset)s"
    ).format(
        prefix=prefix, columns=sql.SQL(_DOCUMENT_COLUMNS), matters=sql.SQL(_MATTERS_OF), where=where
    )
    count = sql.SQL("{prefix} SELECT count(*) AS n FROM documents d WHERE {where}").format(
        prefix=prefix, where=where
    )
    return page, count, params


def _page_links(
    query: dict[str, str], limit: int, offset: int, returned: int, total: int
) -> list[dict[str, str]]:
    """The next/prev links of a page of documents."""
    links = []
    if offset + returned < total:
        next_query = urlencode({**query, "limit": limit, "offset": offset + limit})
        links.append({"rel": "next", "href": f"/api/v1/disclosures?{next_query}"})
    if offset > 0:
        prev_query = urlencode({**query, "limit": limit, "offset": max(0, offset - limit)})
        links.append({"rel": "prev", "href": f"/api/v1/disclosures?{prev_query}"})
    return links


# a document's facilities: every facility ↔ matter link in force for its matters, and the
# facilities it names; per facility the strongest link, the facilities it names first
_DOCUMENT_FACILITIES = sql.SQL(
    """
WITH links AS (
    SELECT l.facility_id, l.method, l.score, l.matched, NULL::text AS matter_id, 0 AS direct
    FROM facility_document_links l WHERE l.document_id = %(id)s
    UNION ALL
    SELECT fm.facility_id, fm.method, fm.score, NULL, fm.matter_id, 1
    FROM facility_matter_links fm WHERE fm.matter_id = ANY(%(matters)s)
), best AS (
    SELECT DISTINCT ON (facility_id) * FROM links ORDER BY facility_id, score DESC, direct
)
SELECT {columns}, b.method AS link_method, b.score AS link_score, b.matched AS link_matched,
       b.matter_id AS link_matter, count(*) OVER () AS total
FROM best b JOIN facilities f ON f.id = b.facility_id
WHERE {live} AND (%(layer)s::text IS NULL OR f.layer = %(layer)s)
ORDER BY b.direct, b.score DESC, f.name, f.id
LIMIT %(limit)s OFFSET %(offset)s
"""
).format(columns=sql.SQL(FEATURE_COLUMNS), live=sql.SQL(live("f")))


@router.get(
    "/api/v1/disclosures/{document_id}",
    summary="One disclosure document with its matters and its facilities (GeoJSON)",
    responses={404: {"description": "no document has this id"}},
)
async def get_disclosure(
    document_id: Annotated[str, Path(max_length=MAX_ID_LENGTH)],
    pool: PoolDep,
    settings: SettingsDep,
    layer: Annotated[str | None, Query(max_length=40, description="only this layer")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_FACILITIES_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    """The document and the facilities it concerns, strongest link first."""
    if layer is not None:
        parse_layer(layer)
    if "\x00" in document_id:
        raise NotFound("no disclosure document with this id")
    async with pool.connection() as conn:
        cursor = await conn.execute(
            sql.SQL("SELECT {columns}, {matters} FROM documents d WHERE d.id = %s").format(
                columns=sql.SQL(_DOCUMENT_COLUMNS), matters=sql.SQL(_MATTERS_OF)
            ),
            (document_id,),
        )
        row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"no disclosure document with id {document_id!r}")
        matter_ids = [m["id"] for m in row["matters"]]
        cursor = await conn.execute(
            _DOCUMENT_FACILITIES,
            {"id": document_id, "matters": matter_ids, "layer": layer, "limit": limit,
             "offset": offset},
        )  # fmt: skip
        facilities = await cursor.fetchall()
        if not facilities and offset > 0:
            # past the end: the window count is gone with the rows; ask for it on its own
            cursor = await conn.execute(
                _DOCUMENT_FACILITIES,
                {"id": document_id, "matters": matter_ids, "layer": layer, "limit": 1,
                 "offset": 0},
            )  # fmt: skip
            first = await cursor.fetchone()
            total = int(first["total"]) if first else 0
        else:
            total = int(facilities[0]["total"]) if facilities else 0
        await attach(conn, facilities, settings)
    features = []
    for facility in facilities:
        facility["extra"] = {
            "link": {
                "method": facility["link_method"],
                "score": round(float(facility["link_score"]), 4),
                "matched": facility["link_matched"],
                "matter": facility["link_matter"],
            }
        }
        features.append(to_feature(facility, timezone=settings.district.timezone))
    body = _document(row)
    body["facilities"] = feature_collection(
        features, numberMatched=total, numberReturned=len(features), limit=limit, offset=offset
    )
    return json_response(body)
