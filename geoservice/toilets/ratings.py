"""Resident ratings of facilities (``POST /api/v1/facilities/{id}/ratings``).

No accounts: a client is a salted hash of its IP address + user agent, and of an anonymous
random cookie the service hands out. Either one having rated a facility in the last
`rating_interval_h` hours is enough to refuse another rating there (429): changing the
cookie or the network alone does not get round the limit. Changing the user agent (and
dropping the cookie) does not either: one network address may rate a facility at most
`ratings_per_address` times per interval, headroom for residents behind one carrier NAT.

``client_hash`` is ``<address hash>:<address + agent hash>``, so the address is counted
without storing it. Low-rating alerts count raters, not ratings: a rater is an address (for
ratings stored before the address was kept, the whole client hash), its ratings averaged first.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from datetime import datetime
from typing import Annotated, Any, cast

from fastapi import APIRouter, Path, Request, Response
from psycopg import AsyncConnection
from pydantic import BaseModel, ConfigDict, Field, field_validator

from geoservice.api.deps import PoolDep, SettingsDep
from geoservice.api.errors import Conflict, InvalidParameter, NotFound, TooManyRequests
from geoservice.api.features import iso
from geoservice.settings import Settings
from layers import RATINGS, has_capability

router = APIRouter(tags=["ratings"])

#: the tags a toilet rating may carry
TOILET_TAGS = (
    "no_paper",
    "no_soap",
    "no_water",
    "wet_floor",
    "broken_lock",
    "blocked",
    "smelly",
    "dirty",
    "out_of_order",
    "clean",
    "well_stocked",
    "accessible_ok",
)
COOKIE = "servicemap_client"
COOKIE_MAX_AGE_S = 365 * 86400
MAX_COMMENT = 500
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
#: characters a comment may not hold: NUL (PostgreSQL text refuses it) and other C0 controls
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

Score = Annotated[int, Field(ge=1, le=5)]


class RatingIn(BaseModel):
    """A rating: overall score 1–5; toilets may add sub-scores and tags."""

    model_config = ConfigDict(strict=True, extra="forbid")

    score: Score
    cleanliness: Score | None = None
    smell: Score | None = None
    supplies: Score | None = None
    tags: list[str] = Field(default_factory=list, max_length=len(TOILET_TAGS))
    comment: str | None = Field(None, max_length=MAX_COMMENT * 4)

    @field_validator("tags")
    @classmethod
    def _known_tags(cls, tags: list[str]) -> list[str]:
        normalised = [t.strip().lower().replace(" ", "_").replace("-", "_") for t in tags]
        unknown = [t for t in normalised if t not in TOILET_TAGS]
        if unknown:
            raise ValueError(
                f"unknown tag(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(TOILET_TAGS)}"
            )
        return list(dict.fromkeys(normalised))

    @field_validator("comment")
    @classmethod
    def _clean_comment(cls, comment: str | None) -> str | None:
        if comment is None:
            return None
        comment = _CONTROL.sub("", comment).strip()
        if len(comment) > MAX_COMMENT:
            raise ValueError(f"at most {MAX_COMMENT} characters (got {len(comment)})")
        return comment or None


class RatingSummary(BaseModel):
    """A facility's averages after the rating."""

    average: float | None
    count: int
    average_30d: float | None
    count_30d: int


class RatingOut(BaseModel):
    """The stored rating."""

    id: int
    facility_id: str
    score: int
    cleanliness: int | None
    smell: int | None
    supplies: int | None
    tags: list[str]
    comment: str | None
    created_at: str
    rating: RatingSummary


def client_hashes(request: Request, salt: str) -> tuple[str, str, str | None]:
    """(hash of IP, then of IP + user agent; hash of the cookie token; a new token if none)."""
    ip = request.client.host if request.client else "unknown"
    agent = request.headers.get("user-agent", "")[:512]
    address = hashlib.sha256(f"{salt}\0address\0{ip}".encode()).hexdigest()
    client = f"{address}:" + hashlib.sha256(f"{salt}\0ip\0{ip}\0{agent}".encode()).hexdigest()
    token = request.cookies.get(COOKIE, "")
    new_token = None
    if not _COOKIE_VALUE.match(token):
        token = new_token = secrets.token_urlsafe(32)
    cookie = hashlib.sha256(f"{salt}\0cookie\0{token}".encode()).hexdigest()
    return client, cookie, new_token


#: a rating's rater: its address hash (the part before ':'; older rows: the whole hash)
RATER = "split_part(client_hash, ':', 1)"
#: per facility over 30 days: raters (n), the mean of each rater's mean score (average) and
#: the first rating (first); "{where}" narrows the ratings
RATER_STATS = f"""
SELECT facility_id, count(*) AS n, avg(score) AS average, min(first) AS first
  FROM (SELECT facility_id, {RATER} AS rater, avg(score) AS score, min(created_at) AS first
          FROM facility_ratings
         WHERE created_at > now() - interval '30 days' {{where}}
         GROUP BY facility_id, rater) per_rater
 GROUP BY facility_id
"""


async def refresh_low_rating(conn: Any, facility_id: str, settings: Settings) -> None:
    """Open (keeping its start) or close the facility's low-rating alert from its 30-day stats."""
    toilets = settings.toilets
    stats = RATER_STATS.format(where="AND facility_id = %(f)s")
    await conn.execute(
        f"WITH s AS ({stats}),"
        " closed AS (DELETE FROM facility_rating_alerts WHERE facility_id = %(f)s"
        "            AND NOT EXISTS (SELECT 1 FROM s WHERE n >= %(n)s AND average < %(below)s))"
        " INSERT INTO facility_rating_alerts (facility_id, low_since)"
        " SELECT %(f)s, now() FROM s WHERE n >= %(n)s AND average < %(below)s"
        " ON CONFLICT (facility_id) DO NOTHING",  # noqa: S608 - constants only
        {"f": facility_id, "n": toilets.low_rating_min_count, "below": toilets.low_rating_below},
    )


FacilityId = Annotated[str, Path(max_length=200, description="the facility id")]


@router.post(
    "/api/v1/facilities/{facility_id}/ratings",
    status_code=201,
    response_model=RatingOut,
    summary="Rate a facility (toilets: sub-scores and tags too)",
    responses={
        404: {"description": "no such facility"},
        429: {"description": "this client rated this facility recently (see Retry-After)"},
    },
)
async def post_rating(
    facility_id: FacilityId,
    rating: RatingIn,
    request: Request,
    response: Response,
    pool: PoolDep,
    settings: SettingsDep,
) -> RatingOut:
    """Store one rating; one per client per facility per interval (429 on repeats)."""
    client, cookie, new_cookie = client_hashes(request, settings.service.client_salt)
    async with pool.connection() as conn, conn.transaction():
        await _check_rateable(conn, facility_id, rating)
        # one writer per facility at a time: parallel spam cannot slip two ratings past the check
        await conn.execute(_LOCK_FACILITY, (facility_id,))
        await _check_not_recent(conn, facility_id, client, cookie, settings)
        row = await _fetch_one(
            conn,
            _INSERT_RATING,
            (facility_id, rating.score, rating.cleanliness, rating.smell, rating.supplies,
             rating.tags, rating.comment, client, cookie),
        )  # fmt: skip
        await refresh_low_rating(conn, facility_id, settings)
        summary = await _fetch_one(conn, _RATING_SUMMARY, (facility_id,))
    if new_cookie is not None:
        response.set_cookie(
            COOKIE, new_cookie, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="lax", path="/"
        )
    created: datetime = row["created_at"]
    return RatingOut(
        id=int(row["id"]),
        facility_id=facility_id,
        score=rating.score,
        cleanliness=rating.cleanliness,
        smell=rating.smell,
        supplies=rating.supplies,
        tags=rating.tags,
        comment=rating.comment,
        created_at=created.isoformat(),
        rating=RatingSummary(
            average=_round(summary["average"]),
            count=int(summary["count"]),
            average_30d=_round(summary["average_30d"]),
            count_30d=int(summary["count_30d"]),
        ),
    )


_FACILITY = "SELECT layer, status FROM facilities WHERE id = %s"
_LOCK_FACILITY = "SELECT pg_advisory_xact_lock(hashtext('rating:' || %s))"
#: this client's (address + agent, or cookie) latest rating of the facility within the interval
_RECENT_RATING = """
SELECT max(created_at) AS at,
       extract(epoch FROM max(created_at) + make_interval(secs => %(s)s) - now()) AS wait
  FROM facility_ratings
 WHERE facility_id = %(f)s AND created_at > now() - make_interval(secs => %(s)s)
   AND (client_hash = %(c)s OR cookie_hash = %(k)s)
"""
#: the ratings of the facility from this address within the interval, newest first
_ADDRESS_RATINGS = f"""
SELECT created_at AS at,
       extract(epoch FROM created_at + make_interval(secs => %(s)s) - now()) AS wait
  FROM facility_ratings
 WHERE facility_id = %(f)s AND created_at > now() - make_interval(secs => %(s)s)
   AND {RATER} = %(a)s
 ORDER BY created_at DESC
 LIMIT %(n)s
"""
_INSERT_RATING = """
INSERT INTO facility_ratings (facility_id, score, cleanliness, smell, supplies, tags, comment,
                              client_hash, cookie_hash)
VALUES (%s, %s, %s, %s, %s, to_jsonb(%s::text[]), %s, %s, %s)
RETURNING id, created_at
"""
_RATING_SUMMARY = """
SELECT avg(score) AS average, count(*) AS count,
       avg(score) FILTER (WHERE created_at > now() - interval '30 days') AS average_30d,
       count(*) FILTER (WHERE created_at > now() - interval '30 days') AS count_30d
  FROM facility_ratings WHERE facility_id = %s
"""


async def _fetch_one(conn: AsyncConnection[Any], query: str, params: Any) -> dict[str, Any]:
    row = await (await conn.execute(query, params)).fetchone()
    assert row is not None  # aggregates and INSERT … RETURNING always give one row
    return cast(dict[str, Any], row)


async def _check_rateable(conn: AsyncConnection[Any], facility_id: str, rating: RatingIn) -> None:
    """404 for an unknown facility, 409 for a removed one, 422 for a rubric it lacks."""
    facility = await (await conn.execute(_FACILITY, (facility_id,))).fetchone()
    if facility is None:
        raise NotFound(f"no facility with id {facility_id!r}")
    if facility["status"] == "removed":
        raise Conflict(f"facility {facility_id!r} has been removed and cannot be rated")
    if has_capability(facility["layer"], RATINGS):
        return
    extras = [n for n in ("cleanliness", "smell", "supplies") if getattr(rating, n) is not None]
    extras += ["tags"] if rating.tags else []
    if extras:
        raise InvalidParameter(
            f"body field(s) {', '.join(extras)}: only toilets take sub-scores and tags;"
            f" this is a {facility['layer']}"
        )


async def _check_not_recent(
    conn: AsyncConnection[Any], facility_id: str, client: str, cookie: str, settings: Settings
) -> None:
    """429 (with Retry-After) when this client rated the facility within the interval."""
    interval_s = settings.toilets.rating_interval_h * 3600
    params = {"f": facility_id, "s": interval_s, "c": client, "k": cookie}
    recent = await (await conn.execute(_RECENT_RATING, params)).fetchone()
    if recent is not None and recent["at"] is not None:
        raise TooManyRequests(
            f"this client rated facility {facility_id!r} at {iso(recent['at'])};"
            f" one rating per {settings.toilets.rating_interval_h:g} hours",
            retry_after=math.ceil(float(recent["wait"])),
        )
    # the address, whatever the user agent or cookie says
    allowed = settings.toilets.ratings_per_address
    params = {**params, "a": client.split(":", 1)[0], "n": allowed}
    latest = await (await conn.execute(_ADDRESS_RATINGS, params)).fetchall()
    if len(latest) >= allowed:
        raise TooManyRequests(
            f"facility {facility_id!r} was rated {allowed} times from this network address"
            f" within {settings.toilets.rating_interval_h:g} hours; that is the most allowed",
            retry_after=math.ceil(float(latest[-1]["wait"])),
        )


def _round(value: Any) -> float | None:
    return round(float(value), 2) if value is not None else None
