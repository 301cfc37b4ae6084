"""The feed: events recorded where things happen, fanned out set-based to the residents concerned.

Triggers (migrations 0008, 0011) write ``resident_events`` in the statement that changed the data:
documents added or changed, documents filed under a matter, facilities added (while someone
follows an area), closed, reopened or removed, progress of cases a resident keeps. ``fan_out``
then takes a batch of pending events and, in ONE statement, marks them fanned out and inserts a
feed row for every resident they concern, joined through the subscriptions: matter (the
document's matters), domain (via the matters), facility (the facility's own events, its matters'
documents and the documents naming it) and area (ST_DWithin on geography, bounded by the largest
radius allowed so the GiST index serves it), plus case events to the residents who keep the case.
A resident reached twice (matter and domain) gets one row, with the most specific reason. One
statement for 100,000 subscribers: no loop over residents anywhere. Batches are claimed with
``FOR UPDATE SKIP LOCKED``: concurrent runs (several workers, ``servicemap notify``) never fan
an event out twice.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Query, Request, Response

from geoservice.api.deps import get_pool, get_settings
from geoservice.api.errors import Unauthorized
from geoservice.api.routing import standby_for
from geoservice.residents.signin import (
    SESSION,
    SIGN_IN_FIRST,
    request_token,
    resident_for_token,
    session_params,
    session_resident,
)
from geoservice.residents.subscriptions import reason

router = APIRouter(prefix="/api/v1/me", tags=["residents"])

#: events claimed per fan-out statement
FANOUT_BATCH = 1000

# rank: the reason shown when several subscriptions reach one resident (lowest wins)
FAN_OUT = """
WITH batch AS (
    UPDATE resident_events e SET fanned_out_at = now()
    WHERE e.id IN (SELECT id FROM resident_events WHERE fanned_out_at IS NULL
                   ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
    RETURNING e.id, e.kind, e.document_id, e.matter_id, e.facility_id, e.case_id, e.layer, e.geom
), doc_matters AS (
    SELECT b.id AS event_id, dm.matter_id
    FROM batch b JOIN document_matters dm ON dm.document_id = b.document_id
    WHERE b.document_id IS NOT NULL AND (b.matter_id IS NULL OR dm.matter_id = b.matter_id)
), targets AS (
    SELECT d.event_id, s.resident_id, s.id AS subscription_id, 1 AS rank
    FROM doc_matters d
    JOIN resident_subscriptions s ON s.kind = 'matter' AND s.target = d.matter_id
    UNION ALL
    SELECT d.event_id, s.resident_id, s.id, 3
    FROM doc_matters d JOIN matters m ON m.id = d.matter_id
    JOIN resident_subscriptions s ON s.kind = 'domain' AND s.target = m.domain
    UNION ALL
    SELECT d.event_id, s.resident_id, s.id, 2
    FROM doc_matters d JOIN facility_matter_links fl ON fl.matter_id = d.matter_id
    JOIN resident_subscriptions s ON s.kind = 'facility' AND s.target = fl.facility_id
    UNION ALL
    SELECT b.id, s.resident_id, s.id, 2
    FROM batch b JOIN facility_document_links l ON l.document_id = b.document_id
    JOIN resident_subscriptions s ON s.kind = 'facility' AND s.target = l.facility_id
    UNION ALL
    SELECT b.id, s.resident_id, s.id, 1
    FROM batch b JOIN resident_subscriptions s ON s.kind = 'facility' AND s.target = b.facility_id
    WHERE b.kind IN ('facility_new', 'facility_closed', 'facility_reopened', 'facility_removed')
    UNION ALL
    SELECT b.id, s.resident_id, s.id, 4
    FROM batch b JOIN resident_subscriptions s
      ON s.kind = 'area' AND s.layer = b.layer
     AND ST_DWithin(s.geom::geography, b.geom::geography, %(max_radius)s)
     AND ST_DWithin(s.geom::geography, b.geom::geography, s.radius_m)
    WHERE b.kind IN ('facility_new', 'facility_closed', 'facility_reopened', 'facility_removed')
      AND b.geom IS NOT NULL
    UNION ALL
    SELECT b.id, rc.resident_id, NULL, 0
    FROM batch b JOIN resident_cases rc ON rc.case_id = b.case_id
    WHERE b.kind = 'case'
), written AS (
    INSERT INTO resident_feed (resident_id, event_id, subscription_id)
    SELECT DISTINCT ON (event_id, resident_id) resident_id, event_id, subscription_id
    FROM targets ORDER BY event_id, resident_id, rank
    RETURNING 1
)
SELECT (SELECT count(*) FROM batch) AS events, (SELECT count(*) FROM written) AS items
"""

PENDING = "SELECT EXISTS (SELECT 1 FROM resident_events WHERE fanned_out_at IS NULL) AS pending"

#: a feed item with what its URL and reason are made of
FEED_COLUMNS = """
f.id, e.kind, e.title, e.document_id, e.facility_id, e.detail, e.at AS published_at,
f.created_at, f.mailed_at, c.code AS case_code,
s.kind AS via, s.label AS via_label, s.layer AS via_layer, s.radius_m AS via_radius,
ST_Y(s.geom) AS via_lat, ST_X(s.geom) AS via_lon
"""
FEED_JOINS = """
FROM resident_feed f
JOIN resident_events e ON e.id = f.event_id
LEFT JOIN resident_subscriptions s ON s.id = f.subscription_id
LEFT JOIN hall_cases c ON c.id = e.case_id
"""
FEED_PAGE = f"""
SELECT {FEED_COLUMNS} {FEED_JOINS}
WHERE f.resident_id = %(r)s AND f.id < %(before)s
ORDER BY f.id DESC LIMIT %(limit)s
"""
#: the session check and the page in one round trip: a row per item, each with the resident's
#: columns (`resident_id` for the session's `id`), or one row with NULL item columns when the
#: page is empty; no row: no live session
SESSION_PAGE = f"""
WITH me AS ({SESSION})
SELECT me.id AS resident_id, me.email, me.lang, me.recommendations, me.mail_digest, me.feed_key,
       me.stale, me.events_pending, page.*
FROM me LEFT JOIN LATERAL (
    {FEED_PAGE.replace("%(r)s", "me.id")}
) page ON true
"""

#: the largest feed id (no `before` given)
NO_CURSOR = 2**63 - 1


def fan_out(conn: Any, max_radius_m: float, batch: int = FANOUT_BATCH) -> tuple[int, int]:
    """Fan every pending event out (sync connection): (events, feed items) written."""
    events = items = 0
    while True:
        with conn.transaction():
            row = conn.execute(FAN_OUT, {"batch": batch, "max_radius": max_radius_m}).fetchone()
        events += row["events"]
        items += row["items"]
        if row["events"] < batch:
            return events, items


async def fan_out_async(pool: Any, max_radius_m: float, batch: int = FANOUT_BATCH) -> int:
    """Fan pending events out on the async pool (when any are pending): feed items written."""
    items = 0
    async with pool.connection() as conn:
        pending = await (await conn.execute(PENDING, prepare=True)).fetchone()
        while pending is not None and pending["pending"]:
            async with conn.transaction():
                params = {"batch": batch, "max_radius": max_radius_m}
                row = await (await conn.execute(FAN_OUT, params)).fetchone()
            items += row["items"]
            if row["events"] < batch:
                break
    return items


def item_url(row: dict[str, Any], public_url: str) -> str:
    """The page a feed item links to: the document, the facility or the appointment."""
    if row["kind"] == "case" and row.get("case_code"):
        return f"{public_url}/appointments/{row['case_code']}"
    if row.get("document_id"):
        return f"{public_url}/documents/{row['document_id']}"
    return f"{public_url}/facilities/{row['facility_id']}"


def item_json(row: dict[str, Any], lang: str, public_url: str) -> dict[str, Any]:
    """A feed row as the API shows it."""
    title = row["title"]
    if row["kind"] == "case" and row.get("detail"):
        title = f"{title}: {row['detail']}"
    return {
        "id": row["id"],
        "kind": row["kind"],
        "title": title,
        "url": item_url(row, public_url),
        "published_at": row["published_at"],
        "reason": reason(row["via"], row["via_label"], row, lang),
    }


async def feed_page(
    pool: Any, resident_id: int, lang: str, public_url: str, limit: int, before: int | None
) -> list[dict[str, Any]]:
    """A page of a resident's feed, newest first."""
    params = {"r": resident_id, "before": before or NO_CURSOR, "limit": limit}
    async with pool.connection() as conn:
        rows = await (await conn.execute(FEED_PAGE, params, prepare=True)).fetchall()
    return [item_json(r, lang, public_url) for r in rows]


@router.get(
    "/feed",
    response_class=Response,
    responses={401: {"description": "missing, invalid or revoked resident token"}},
)
async def my_feed(
    request: Request,
    limit: int = Query(50, ge=1, le=200),
    before: int | None = Query(None, ge=1, description="items older than this feed id"),
) -> Response:
    """The resident's feed, newest first: ``{"items": [...]}``, each with its reason.

    The hot read path, so it takes the request itself rather than FastAPI dependencies (the
    same helpers they wrap): the session is checked on the primary and, unless the page may be
    read on a standby, the page comes in the same statement (``SESSION_PAGE``): one round trip.
    """
    settings = get_settings(request)
    primary = get_pool(request)
    public_url = settings.service.public_url
    token = request_token(request)
    if token is None:
        raise Unauthorized(SIGN_IN_FIRST)
    standby = standby_for(request)
    if standby is None:
        params = session_params(token, settings)
        params |= {"before": before or NO_CURSOR, "limit": limit}
        async with primary.connection() as conn:
            rows = await (await conn.execute(SESSION_PAGE, params, prepare=True)).fetchall()
            if not rows:
                raise Unauthorized(SIGN_IN_FIRST)
            resident = await session_resident(conn, rows[0], params, "resident_id")
        items = [item_json(r, resident.lang, public_url) for r in rows if r["id"] is not None]
    else:
        found = await resident_for_token(primary, token, settings)
        if found is None:
            raise Unauthorized(SIGN_IN_FIRST)
        resident = found
        items = await feed_page(standby.pool, resident.id, resident.lang, public_url, limit, before)
    # what happened since the last fan-out reaches the feed before it is read; rows it just
    # wrote are read back from the primary (a standby may not have them yet)
    if resident.events_pending and await fan_out_async(primary, settings.residents.max_radius_m):
        items = await feed_page(primary, resident.id, resident.lang, public_url, limit, before)
    out: dict[str, Any] = {"items": items}
    if len(items) == limit:
        out["next"] = f"/api/v1/me/feed?limit={limit}&before={items[-1]['id']}"
    # orjson straight to bytes (datetimes as RFC 3339)
    return Response(orjson.dumps(out), media_type="application/json")
