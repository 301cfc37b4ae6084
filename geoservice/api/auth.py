"""Bearer tokens for sensors and staff: random, shown once, stored as a hash, revocable.

A token is 32 random bytes (``secrets``), URL-safe, with a prefix telling its kind
(``smd_`` device, ``sms_`` staff). Only its SHA-256 is stored: the token is high-entropy,
so a plain hash is enough and lookups stay one index probe. The stored hash is compared
again with ``hmac.compare_digest`` after the lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from geoservice.api.deps import PoolDep, PrimaryPoolDep
from geoservice.api.errors import Forbidden, Unauthorized

DEVICE_PREFIX = "smd_"
STAFF_PREFIX = "sms_"
#: longest Authorization header value looked at (tokens are ~47 characters)
MAX_TOKEN_CHARS = 200


def new_token(prefix: str) -> str:
    """A fresh random token with its kind prefix."""
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The stored form of a token: hex SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(request: Request) -> str:
    """The bearer token of a request, or 401 naming what is expected."""
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise Unauthorized("invalid token")
    return token


@dataclass(frozen=True)
class Device:
    """An authenticated sensor device."""

    id: int
    facility_id: str
    stall_ids: frozenset[str]


@dataclass(frozen=True)
class StaffMember:
    """An authenticated member of staff."""

    id: int
    name: str


def _matches(stored: Any, computed: str) -> bool:
    return isinstance(stored, str) and hmac.compare_digest(stored, computed)


async def _other_kind(pool: PoolDep, table: str, digest: str) -> bool:
    """Whether the digest belongs to a live token of the other kind (then 403, not 401)."""
    query = (
        "SELECT token_hash FROM toilet_devices WHERE token_hash = %s AND revoked_at IS NULL"
        if table == "toilet_devices"
        else "SELECT token_hash FROM staff_members WHERE token_hash = %s AND revoked_at IS NULL"
    )
    async with pool.connection() as conn:
        row = await (await conn.execute(query, (digest,))).fetchone()
    return row is not None and _matches(row["token_hash"], digest)


async def current_device(request: Request, pool: PoolDep) -> Device:
    """The device whose token the request carries: 401 missing/invalid/revoked, 403 staff."""
    token = bearer_token(request)
    digest = token_hash(token)
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT d.id, d.facility_id, d.token_hash, d.revoked_at,"
                " ARRAY(SELECT s.stall_id FROM toilet_stalls s WHERE s.device_id = d.id)"
                " AS stall_ids FROM toilet_devices d WHERE d.token_hash = %s",
                (digest,),
                prepare=True,
            )
        ).fetchone()
    if row is None or not _matches(row["token_hash"], digest):
        if token.startswith(STAFF_PREFIX) and await _other_kind(pool, "staff_members", digest):
            raise Forbidden("a staff token cannot post sensor readings; use the device's token")
        raise Unauthorized("invalid device token")
    if row["revoked_at"] is not None:
        raise Unauthorized("this device token has been revoked")
    return Device(int(row["id"]), str(row["facility_id"]), frozenset(row["stall_ids"]))


async def current_staff(request: Request, pool: PrimaryPoolDep) -> StaffMember:
    """The member of staff whose token the request carries: 401 missing/invalid/revoked."""
    # checked on the primary, also for reads: a revocation holds from the next request on
    token = bearer_token(request)
    digest = token_hash(token)
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT id, name, token_hash, revoked_at FROM staff_members WHERE token_hash = %s",
                (digest,),
            )
        ).fetchone()
    if row is None or not _matches(row["token_hash"], digest):
        if token.startswith(DEVICE_PREFIX) and await _other_kind(pool, "toilet_devices", digest):
            raise Forbidden("a device token cannot use staff routes; use a staff token")
        raise Unauthorized("invalid staff token")
    if row["revoked_at"] is not None:
        raise Unauthorized("this staff token has been revoked")
    return StaffMember(int(row["id"]), str(row["name"]))


#: seconds a device's identity stays cached by the ingest route (revocation is still checked
#: in the same transaction as every write, so a revoked token never stores anything)
DEVICE_CACHE_S = 30.0
#: most cached device identities per process
DEVICE_CACHE_MAX = 100_000


async def cached_device(request: Request, pool: PoolDep) -> Device:
    """The device of the request's token, from a per-process cache when fresh.

    Only for routes that re-check revocation in their own write (``toilet_ingest_begin`` does);
    saves a database round trip per sensor post.
    """
    token = bearer_token(request)
    digest = token_hash(token)
    cache: dict[str, tuple[Device, float]] | None = getattr(request.app.state, "devices", None)
    if cache is None:
        cache = request.app.state.devices = {}
    hit = cache.get(digest)
    now = time.monotonic()
    if hit is not None and hit[1] > now:
        return hit[0]
    device = await current_device(request, pool)
    if len(cache) >= DEVICE_CACHE_MAX:
        cache.clear()
    cache[digest] = (device, now + DEVICE_CACHE_S)
    return device


def forget_device(request: Request) -> None:
    """Drop the request's token from the device cache (after a revocation was noticed)."""
    cache: dict[str, tuple[Device, float]] | None = getattr(request.app.state, "devices", None)
    header = request.headers.get("authorization", "")
    if cache is not None:
        cache.pop(token_hash(header.partition(" ")[2].strip()), None)


def remember_stalls(request: Request, device: Device, stall_ids: set[str]) -> None:
    """Record stalls a post registered, so the cached device knows them."""
    cache: dict[str, tuple[Device, float]] | None = getattr(request.app.state, "devices", None)
    header = request.headers.get("authorization", "")
    if cache is None or not stall_ids - device.stall_ids:
        return
    digest = token_hash(header.partition(" ")[2].strip())
    hit = cache.get(digest)
    if hit is not None:
        updated = Device(device.id, device.facility_id, device.stall_ids | stall_ids)
        cache[digest] = (updated, hit[1])


DeviceDep = Annotated[Device, Depends(current_device)]
CachedDeviceDep = Annotated[Device, Depends(cached_device)]
StaffDep = Annotated[StaffMember, Depends(current_staff)]
