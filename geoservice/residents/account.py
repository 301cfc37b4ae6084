"""The resident's own data: profile and choices, export, erasure, cases, ratings, recommendations.

Data minimisation: an account is an e-mail address, a language, the consent version and the
resident's own choices. ``GET /api/v1/me/export`` returns every stored row about the resident;
``DELETE /api/v1/me`` erases the account, its sessions, subscriptions, feed, views and the links
to cases and ratings (foreign keys cascade) and any pending sign-in codes; ratings stay,
anonymous as they always were. Browsing history (``resident_views``) is kept only while the
resident has recommendations on, and is deleted when they turn them off. Accounts unused for
``retention_days`` are erased by ``servicemap notify`` (``erase_unused``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from geoservice.api.deps import PrimaryPoolDep, SettingsDep
from geoservice.api.errors import InvalidParameter, NotFound
from geoservice.residents.feed import FEED_COLUMNS, FEED_JOINS, item_json
from geoservice.residents.signin import LANGS, SESSION_COOKIE, ResidentDep
from geoservice.residents.subscriptions import SUBSCRIPTION_COLUMNS, subscription_json
from geoservice.residents.texts import CONSENT_VERSION
from geoservice.toilets.ratings import COOKIE as RATING_COOKIE
from geoservice.toilets.ratings import client_hashes

router = APIRouter(prefix="/api/v1/me", tags=["residents"])
public_router = APIRouter(prefix="/api/v1/residents", tags=["residents"])

_ME = """
SELECT id, email, lang, consent_version, consented_at, recommendations, mail_digest, feed_key,
       created_at, last_seen_at
FROM residents WHERE id = %(r)s
"""
_UPDATE = """
UPDATE residents SET lang = coalesce(%(lang)s, lang),
       recommendations = coalesce(%(recommendations)s, recommendations),
       mail_digest = coalesce(%(mail_digest)s, mail_digest)
WHERE id = %(r)s
"""
_FORGET_VIEWS = "DELETE FROM resident_views WHERE resident_id = %(r)s"
_ERASE = """
WITH codes AS (DELETE FROM resident_codes WHERE email = %(email)s)
DELETE FROM residents WHERE id = %(r)s
"""
_SESSIONS = """
SELECT created_at, last_used_at FROM resident_sessions WHERE resident_id = %(r)s ORDER BY created_at
"""
_SUBSCRIPTIONS = f"""
SELECT {SUBSCRIPTION_COLUMNS} FROM resident_subscriptions s WHERE s.resident_id = %(r)s ORDER BY s.id
"""
_FEED_ALL = f"SELECT {FEED_COLUMNS} {FEED_JOINS} WHERE f.resident_id = %(r)s ORDER BY f.id DESC"
_VIEWS = "SELECT kind, target, viewed_at FROM resident_views WHERE resident_id = %(r)s"
_CODES = "SELECT created_at, expires_at, tries, used_at FROM resident_codes WHERE email = %(email)s"
#: a resident's cases (appointments and walk-ins they added by code), newest first
CASES = """
SELECT c.code, c.kind, c.status, c.starts_at, c.ends_at, c.day, c.hall_id, f.name AS hall,
       c.matter_id, m.title AS matter, rc.created_at AS added_at
FROM resident_cases rc
JOIN hall_cases c ON c.id = rc.case_id
JOIN facilities f ON f.id = c.hall_id
JOIN matters m ON m.id = c.matter_id
WHERE rc.resident_id = %(r)s ORDER BY c.day DESC, c.id DESC
"""
_ADD_CASE = """
INSERT INTO resident_cases (resident_id, case_id)
SELECT %(r)s, id FROM hall_cases WHERE code = %(code)s
ON CONFLICT DO NOTHING
RETURNING case_id
"""
_CASE_EXISTS = "SELECT id FROM hall_cases WHERE code = %(code)s"
_CLAIM_RATINGS = """
INSERT INTO resident_ratings (resident_id, rating_id)
SELECT %(r)s, id FROM facility_ratings WHERE cookie_hash = %(cookie)s
ON CONFLICT DO NOTHING
"""
#: ratings the resident gave (claimed from their browser's rating cookie), newest first
RATINGS = """
SELECT fr.id, fr.facility_id, f.name AS facility, fr.score, fr.cleanliness, fr.smell,
       fr.supplies, fr.tags, fr.comment, fr.created_at
FROM resident_ratings rr
JOIN facility_ratings fr ON fr.id = rr.rating_id
JOIN facilities f ON f.id = fr.facility_id
WHERE rr.resident_id = %(r)s ORDER BY fr.created_at DESC
"""
_VIEW = """
INSERT INTO resident_views (resident_id, kind, target) VALUES (%(r)s, %(kind)s, %(target)s)
ON CONFLICT (resident_id, kind, target) DO UPDATE SET viewed_at = now()
"""
#: matters of facilities the resident looked at, not yet followed: only with recommendations on
RECOMMENDATIONS = """
SELECT m.id, m.title, m.domain, count(*) AS weight
FROM resident_views v
JOIN facility_matter_links fl ON v.kind = 'facility' AND fl.facility_id = v.target
JOIN matters m ON m.id = fl.matter_id
WHERE v.resident_id = %(r)s
  AND NOT EXISTS (SELECT 1 FROM resident_subscriptions s
                  WHERE s.resident_id = %(r)s AND s.kind = 'matter' AND s.target = m.id)
GROUP BY m.id, m.title, m.domain ORDER BY weight DESC, m.id LIMIT 10
"""
_UNSUBSCRIBE = "UPDATE residents SET mail_digest = false WHERE mail_key = %(key)s RETURNING id"
#: erase accounts unused for the retention period (sessions, codes and feed go with them)
ERASE_UNUSED = """
WITH gone AS (
    DELETE FROM residents WHERE last_seen_at < now() - make_interval(days => %(days)s)
    RETURNING email
), codes AS (DELETE FROM resident_codes c USING gone WHERE c.email = gone.email)
SELECT count(*) AS erased FROM gone
"""
#: sign-in codes are kept a day for the rate limits, then deleted; stale sessions too
PURGE = """
WITH codes AS (DELETE FROM resident_codes WHERE created_at < now() - interval '1 day' RETURNING 1),
sessions AS (
    DELETE FROM resident_sessions WHERE last_used_at < now() - make_interval(days => %(days)s)
    RETURNING 1
)
SELECT (SELECT count(*) FROM codes) AS codes, (SELECT count(*) FROM sessions) AS sessions
"""


class Choices(BaseModel):
    """What a resident may change about their account."""

    lang: str | None = Field(None, max_length=10)
    recommendations: bool | None = None
    mail_digest: bool | None = None


class CaseCode(BaseModel):
    """An appointment's or ticket's code, as the hall gave it."""

    code: str = Field(min_length=4, max_length=64)


class View(BaseModel):
    """A page the resident looked at (kept only with recommendations on)."""

    kind: Literal["facility", "matter"]
    id: str = Field(max_length=200)


class Unsubscribe(BaseModel):
    """The key from a digest's unsubscribe link."""

    key: str = Field(min_length=8, max_length=100)


def _me_json(row: dict[str, Any], public_url: str) -> dict[str, Any]:
    return {
        "email": row["email"], "lang": row["lang"], "consent_version": row["consent_version"],
        "consented_at": row["consented_at"], "recommendations": row["recommendations"],
        "mail_digest": row["mail_digest"], "created_at": row["created_at"],
        "feed_atom": f"{public_url}/api/v1/me/feed.atom?token={row['feed_key']}",
    }  # fmt: skip


async def claim_ratings(conn: Any, request: Request, resident_id: int, salt: str) -> None:
    """Link the ratings given from this browser (its rating cookie) to the resident."""
    if RATING_COOKIE in request.cookies:
        _, cookie, new = client_hashes(request, salt)
        if new is None:
            await conn.execute(_CLAIM_RATINGS, {"r": resident_id, "cookie": cookie})


@router.get("")
async def me(
    request: Request, resident: ResidentDep, pool: PrimaryPoolDep, settings: SettingsDep
) -> dict[str, Any]:
    """The account: address, language, choices, consent and the private feed address."""
    async with pool.connection() as conn:
        row = await (await conn.execute(_ME, {"r": resident.id})).fetchone()
        await claim_ratings(conn, request, resident.id, settings.service.client_salt)
    assert row is not None
    return _me_json(row, settings.service.public_url)


@router.patch("")
async def change_me(
    body: Choices, resident: ResidentDep, pool: PrimaryPoolDep, settings: SettingsDep
) -> dict[str, Any]:
    """Change language, recommendations (off deletes the browsing history) or mail digests."""
    if body.lang is not None and body.lang not in LANGS:
        raise InvalidParameter(f"body field 'lang': one of {', '.join(LANGS)}")
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(_UPDATE, body.model_dump() | {"r": resident.id})
        if body.recommendations is False:
            await conn.execute(_FORGET_VIEWS, {"r": resident.id})
        row = await (await conn.execute(_ME, {"r": resident.id})).fetchone()
    assert row is not None
    return _me_json(row, settings.service.public_url)


@router.get("/export")
async def export(
    resident: ResidentDep, pool: PrimaryPoolDep, settings: SettingsDep
) -> dict[str, Any]:
    """Everything stored about the resident (PIPL art. 45, GDPR art. 15/20)."""
    params = {"r": resident.id, "email": resident.email}
    public_url = settings.service.public_url
    async with pool.connection() as conn:
        account = await (await conn.execute(_ME, params)).fetchone()
        sessions = await (await conn.execute(_SESSIONS, params)).fetchall()
        subscriptions = await (await conn.execute(_SUBSCRIPTIONS, params)).fetchall()
        feed = await (await conn.execute(_FEED_ALL, params)).fetchall()
        views = await (await conn.execute(_VIEWS, params)).fetchall()
        cases = await (await conn.execute(CASES, params)).fetchall()
        ratings = await (await conn.execute(RATINGS, params)).fetchall()
        codes = await (await conn.execute(_CODES, params)).fetchall()
    assert account is not None
    return {
        "account": _me_json(account, public_url) | {"last_seen_at": account["last_seen_at"]},
        "consent": {"version": account["consent_version"], "current": CONSENT_VERSION},
        "sessions": sessions,
        "sign_in_codes": codes,
        "subscriptions": [subscription_json(s, resident.lang) for s in subscriptions],
        "feed": [
            item_json(f, resident.lang, public_url) | {"mailed_at": f["mailed_at"]} for f in feed
        ],  # fmt: skip
        "views": views,
        "cases": cases,
        "ratings": ratings,
    }


@router.delete("", status_code=204)
async def erase(resident: ResidentDep, pool: PrimaryPoolDep) -> Response:
    """Erase the account, its subscriptions, feed, sessions and links; ratings stay anonymous."""
    async with pool.connection() as conn:
        await conn.execute(_ERASE, {"r": resident.id, "email": resident.email})
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


@router.post("/cases", status_code=201)
async def add_case(body: CaseCode, resident: ResidentDep, pool: PrimaryPoolDep) -> dict[str, str]:
    """Keep an appointment or case (by its code) on the page: its progress reaches the feed."""
    async with pool.connection() as conn:
        exists = await (await conn.execute(_CASE_EXISTS, {"code": body.code})).fetchone()
        if exists is None:
            raise NotFound("no appointment or case with this code")
        await conn.execute(_ADD_CASE, {"r": resident.id, "code": body.code})
    return {"code": body.code}


@router.get("/cases")
async def my_cases(resident: ResidentDep, pool: PrimaryPoolDep) -> dict[str, Any]:
    """The appointments and cases the resident keeps, newest first."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(CASES, {"r": resident.id})).fetchall()
    return {"cases": rows}


@router.get("/ratings")
async def my_ratings(
    request: Request, resident: ResidentDep, pool: PrimaryPoolDep, settings: SettingsDep
) -> dict[str, Any]:
    """Ratings the resident gave (from browsers they signed in with), newest first."""
    async with pool.connection() as conn:
        await claim_ratings(conn, request, resident.id, settings.service.client_salt)
        rows = await (await conn.execute(RATINGS, {"r": resident.id})).fetchall()
    return {"ratings": rows}


@router.post("/views", status_code=204)
async def record_view(body: View, resident: ResidentDep, pool: PrimaryPoolDep) -> Response:
    """Remember a page looked at, only while recommendations are on (else nothing is stored)."""
    if resident.recommendations:
        async with pool.connection() as conn:
            await conn.execute(_VIEW, {"r": resident.id, "kind": body.kind, "target": body.id})
    return Response(status_code=204)


@router.get("/recommendations")
async def recommendations(resident: ResidentDep, pool: PrimaryPoolDep) -> dict[str, Any]:
    """Matters of facilities looked at and not yet followed; empty unless turned on."""
    if not resident.recommendations:
        return {"enabled": False, "matters": []}
    async with pool.connection() as conn:
        rows = await (await conn.execute(RECOMMENDATIONS, {"r": resident.id})).fetchall()
    return {"enabled": True, "matters": rows}


@public_router.post("/unsubscribe")
async def unsubscribe(body: Unsubscribe, pool: PrimaryPoolDep) -> dict[str, str]:
    """Stop digest mails (the key from a mail's link; no sign-in needed)."""
    async with pool.connection() as conn:
        row = await (await conn.execute(_UNSUBSCRIBE, {"key": body.key})).fetchone()
    if row is None:
        raise NotFound("unknown unsubscribe key")
    return {"detail": "digest mails are off"}
