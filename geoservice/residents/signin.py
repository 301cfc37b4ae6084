"""Sign-in without passwords: an e-mail address, a 6-digit one-time code, then a session.

- ``POST /api/v1/residents/sign-in`` answers 202 with the same words whether or not the address
  has an account (no enumeration); the account is made only when a code is verified, with
  consent. Codes are stored hashed, expire after ``code_ttl_s``, allow ``code_tries`` guesses,
  and at most ``codes_per_address_per_hour`` / ``codes_per_network_per_hour`` are sent (both
  counted in the database under an advisory lock on the address, so concurrent requests and
  several workers share them).
- ``POST /api/v1/residents/verify`` gives a bearer token (``smr_…``, stored as SHA-256 like the
  staff tokens) and the same token as an HttpOnly, SameSite=Lax cookie, Secure behind https.
- ``POST /api/v1/residents/sign-out`` deletes the session: the token stops working at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from geoservice.api.auth import MAX_TOKEN_CHARS, new_token, token_hash
from geoservice.api.deps import PrimaryPoolDep, SettingsDep
from geoservice.api.errors import (
    InvalidParameter,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from geoservice.residents.delivery import DeliveryError, delivery_for
from geoservice.residents.texts import CONSENT, CONSENT_VERSION
from geoservice.settings import Settings

logger = logging.getLogger("servicemap.residents")

RESIDENT_PREFIX = "smr_"
SESSION_COOKIE = "servicemap_session"
LANGS = ("zh-Hans", "zh-Hant", "en")
SIGN_IN_FIRST = "sign in first: a resident token (bearer or session cookie) is required"
_EMAIL = re.compile(r"^[^@\s<>\"'(),;:]+@[^@\s<>\"'(),;:]+\.[^@\s<>\"'(),;:]+$")

router = APIRouter(prefix="/api/v1/residents", tags=["residents"])


def normalise_email(value: str) -> str:
    """The address as stored (trimmed, lower case), or InvalidParameter."""
    email = value.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise InvalidParameter("body field 'email': not an e-mail address")
    return email


def network_hash(request: Request, salt: str) -> str:
    """Salted hash of the client's network (/24 for IPv4, /48 for IPv6): the per-network limit."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
        prefix = 24 if address.version == 4 else 48
        network = str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
    except ValueError:
        network = host
    return hashlib.sha256(f"{salt}\0network\0{network}".encode()).hexdigest()


def code_hash(email: str, code: str, salt: str) -> str:
    """The stored form of a code, bound to its address."""
    return hashlib.sha256(f"{salt}\0code\0{email}\0{code}".encode()).hexdigest()


_LIMITS = """
SELECT (SELECT count(*) FROM resident_codes
        WHERE email = %(email)s AND created_at > now() - interval '1 hour') AS per_address,
       (SELECT count(*) FROM resident_codes
        WHERE network = %(network)s AND created_at > now() - interval '1 hour') AS per_network
"""
_NEW_CODE = """
INSERT INTO resident_codes (email, code_hash, network, expires_at)
VALUES (%(email)s, %(hash)s, %(network)s, now() + make_interval(secs => %(ttl)s))
"""
_LATEST_CODE = """
SELECT id, code_hash, tries, expires_at > now() AS fresh
FROM resident_codes WHERE email = %(email)s AND used_at IS NULL
ORDER BY id DESC LIMIT 1 FOR UPDATE
"""
_TRY = "UPDATE resident_codes SET tries = tries + 1 WHERE id = %(id)s"
_USE = "UPDATE resident_codes SET used_at = now(), tries = tries + 1 WHERE id = %(id)s"
_RESIDENT = "SELECT id FROM residents WHERE email = %(email)s"
_NEW_RESIDENT = """
INSERT INTO residents (email, lang, consent_version, feed_key, mail_key)
VALUES (%(email)s, %(lang)s, %(consent)s, %(feed_key)s, %(mail_key)s)
ON CONFLICT (email) DO UPDATE SET last_seen_at = now()
RETURNING id
"""
_NEW_SESSION = """
WITH seen AS (UPDATE residents SET last_seen_at = now() WHERE id = %(resident)s)
INSERT INTO resident_sessions (token_hash, resident_id) VALUES (%(hash)s, %(resident)s)
"""
_END_SESSION = "DELETE FROM resident_sessions WHERE token_hash = %(hash)s"
#: a live session's resident; `stale`: last used over an hour ago; `events_pending`: events
#: wait for the fan-out (the feed then fans out before it reads)
SESSION = """
SELECT r.id, r.email, r.lang, r.recommendations, r.mail_digest, r.feed_key,
       s.last_used_at < now() - interval '1 hour' AS stale,
       EXISTS (SELECT 1 FROM resident_events WHERE fanned_out_at IS NULL) AS events_pending
FROM resident_sessions s JOIN residents r ON r.id = s.resident_id
WHERE s.token_hash = %(hash)s AND s.last_used_at > now() - make_interval(days => %(days)s)
"""
_TOUCH = """
WITH s AS (UPDATE resident_sessions SET last_used_at = now() WHERE token_hash = %(hash)s)
UPDATE residents SET last_seen_at = now() WHERE id = %(id)s
"""


class SignIn(BaseModel):
    """Ask for a code."""

    email: str = Field(max_length=254)
    lang: str | None = Field(None, max_length=10)


class Verify(BaseModel):
    """Exchange a code for a session; `consent` is required when the account is new."""

    email: str = Field(max_length=254)
    code: str = Field(max_length=12)
    consent: bool = False
    lang: str | None = Field(None, max_length=10)


@dataclass(frozen=True)
class Resident:
    """A signed-in resident."""

    id: int
    email: str
    lang: str
    recommendations: bool
    mail_digest: bool
    feed_key: str
    #: events waiting for the fan-out when the session was checked (saves the feed a query)
    events_pending: bool = True


def _lang(value: str | None, settings: Settings) -> str:
    if value is None:
        return settings.district.default_lang
    if value not in LANGS:
        raise InvalidParameter(f"body field 'lang': one of {', '.join(LANGS)}")
    return value


@router.get("/consent")
async def consent(lang: str = "zh-Hans") -> dict[str, str]:
    """The consent text an account is made under, and its version."""
    if lang not in LANGS:
        raise InvalidParameter(f"query parameter 'lang': one of {', '.join(LANGS)}")
    return {"version": CONSENT_VERSION, "lang": lang, "text": CONSENT[lang]}


@router.post("/sign-in", status_code=202)
async def sign_in(
    body: SignIn, request: Request, pool: PrimaryPoolDep, settings: SettingsDep
) -> dict[str, str]:
    """Send a one-time code to the address; the same answer whether or not it has an account."""
    email = normalise_email(body.email)
    lang = _lang(body.lang, settings)
    s = settings.residents
    network = network_hash(request, settings.service.client_salt)
    code = f"{secrets.randbelow(1_000_000):06d}"
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (email,))
        limits = await (
            await conn.execute(_LIMITS, {"email": email, "network": network})
        ).fetchone()
        assert limits is not None
        if limits["per_address"] >= s.codes_per_address_per_hour:
            raise TooManyRequests(
                "too many codes for this address; try again later", retry_after=900
            )
        if limits["per_network"] >= s.codes_per_network_per_hour:
            raise TooManyRequests(
                "too many codes from this network; try again later", retry_after=900
            )
        params = {"email": email, "hash": code_hash(email, code, settings.service.client_salt),
                  "network": network, "ttl": s.code_ttl_s}  # fmt: skip
        await conn.execute(_NEW_CODE, params)
    delivery = delivery_for(s.smtp_url, s.mail_from)
    try:
        await asyncio.to_thread(delivery.send_code, email, code, lang, s.code_ttl_s)
    except DeliveryError as exc:
        logger.error("sign-in code not delivered: %s", exc)
        raise ServiceUnavailable("the code could not be sent just now; try again shortly") from exc
    return {"detail": "if this address can receive mail, a code is on its way"}


def _secure(request: Request, settings: Settings) -> bool:
    return request.url.scheme == "https" or settings.service.public_url.startswith("https://")


@router.post("/verify")
async def verify(
    body: Verify, request: Request, response: Response, pool: PrimaryPoolDep, settings: SettingsDep
) -> dict[str, Any]:
    """A session for the address whose latest code this is; the account is made on first use."""
    email = normalise_email(body.email)
    lang = _lang(body.lang, settings)
    s = settings.residents
    wrong = Unauthorized("the code is wrong or has expired; ask for a new one")
    async with pool.connection() as conn:
        async with conn.transaction():
            row = await (await conn.execute(_LATEST_CODE, {"email": email})).fetchone()
            if row is None or not row["fresh"] or row["tries"] >= s.code_tries:
                raise wrong
            given = code_hash(email, body.code.strip(), settings.service.client_salt)
            if not hmac.compare_digest(str(row["code_hash"]), given):
                await conn.execute(_TRY, {"id": row["id"]})
                ok = False
            else:
                ok = True
        if not ok:
            raise wrong
        async with conn.transaction():
            known = await (await conn.execute(_RESIDENT, {"email": email})).fetchone()
            if known is None and not body.consent:
                # the code stays good: the resident reads the consent text and sends it again
                raise InvalidParameter(
                    "body field 'consent': a new account needs consent to "
                    f"GET /api/v1/residents/consent (version {CONSENT_VERSION})"
                )
            await conn.execute(_USE, {"id": row["id"]})
            if known is None:
                params = {"email": email, "lang": lang, "consent": CONSENT_VERSION,
                          "feed_key": secrets.token_urlsafe(24),
                          "mail_key": secrets.token_urlsafe(24)}  # fmt: skip
                created = await (await conn.execute(_NEW_RESIDENT, params)).fetchone()
                assert created is not None
                resident_id = int(created["id"])
            else:
                resident_id = int(known["id"])
            token = new_token(RESIDENT_PREFIX)
            await conn.execute(_NEW_SESSION, {"hash": token_hash(token), "resident": resident_id})
    response.set_cookie(
        SESSION_COOKIE, token, max_age=s.session_days * 86400, httponly=True, samesite="lax",
        secure=_secure(request, settings), path="/",
    )  # fmt: skip
    return {"token": token, "created": known is None}


def request_token(request: Request) -> str | None:
    """The resident token of a request: the bearer token, else the session cookie."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        token = token.strip()
    else:
        token = request.cookies.get(SESSION_COOKIE, "")
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None
    return token


def session_params(token: str, settings: Settings) -> dict[str, Any]:
    """The parameters of ``SESSION`` (and of statements built on it) for this token."""
    return {"hash": token_hash(token), "days": settings.residents.session_days}


async def session_resident(
    conn: Any, row: dict[str, Any], params: dict[str, Any], id_column: str = "id"
) -> Resident:
    """The resident of a row of ``SESSION``; a session last used over an hour ago is touched."""
    if row["stale"]:
        await conn.execute(_TOUCH, {"hash": params["hash"], "id": row[id_column]})
    return Resident(
        int(row[id_column]), str(row["email"]), str(row["lang"]), bool(row["recommendations"]),
        bool(row["mail_digest"]), str(row["feed_key"]), bool(row["events_pending"]),
    )  # fmt: skip


async def resident_for_token(pool: Any, token: str, settings: Settings) -> Resident | None:
    """The resident whose live session this token is, or None."""
    params = session_params(token, settings)
    async with pool.connection() as conn:
        row = await (await conn.execute(SESSION, params, prepare=True)).fetchone()
        if row is None:
            return None
        return await session_resident(conn, row, params)


async def optional_resident(
    request: Request, pool: PrimaryPoolDep, settings: SettingsDep
) -> Resident | None:
    """The signed-in resident, or None (pages that also serve visitors)."""
    # sessions are checked on the primary, also for reads: sign-out holds from the next request
    token = request_token(request)
    if token is None:
        return None
    return await resident_for_token(pool, token, settings)


async def current_resident(
    resident: Annotated[Resident | None, Depends(optional_resident)],
) -> Resident:
    """The signed-in resident: 401 without a live session."""
    if resident is None:
        raise Unauthorized(SIGN_IN_FIRST)
    return resident


ResidentDep = Annotated[Resident, Depends(current_resident)]
OptionalResidentDep = Annotated[Resident | None, Depends(optional_resident)]


@router.post("/sign-out", status_code=204)
async def sign_out(request: Request, pool: PrimaryPoolDep, settings: SettingsDep) -> Response:
    """End this session: its token and cookie stop working at once."""
    token = request_token(request)
    if token is not None:
        async with pool.connection() as conn:
            await conn.execute(_END_SESSION, {"hash": token_hash(token)})
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=_secure(request, settings))  # fmt: skip
    return response
