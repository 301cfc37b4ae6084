"""What a resident follows: matters, domains (every matter in them), facilities, and areas.

An area is a layer within a radius of a point ("toilets within 500 m of home"); the radius is
bounded by ``max_radius_m`` so the fan-out's ST_DWithin can use the GiST index on the
subscriptions' geography with that bound. Following the same thing twice gives the same id.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

import layers
from geoservice.api.deps import PrimaryPoolDep, SettingsDep
from geoservice.api.errors import InvalidParameter, NotFound
from geoservice.residents.signin import ResidentDep
from geoservice.residents.texts import text

router = APIRouter(prefix="/api/v1/me", tags=["residents"])

_MATTER = "SELECT title FROM matters WHERE id = %(id)s"
_FACILITY = "SELECT name FROM facilities WHERE id = %(id)s"
_COUNT = "SELECT count(*) AS n FROM resident_subscriptions WHERE resident_id = %(r)s"
_ADD = """
INSERT INTO resident_subscriptions AS s (resident_id, kind, target, label, layer, radius_m, geom)
VALUES (%(r)s, %(kind)s, %(target)s, %(label)s, %(layer)s, %(radius)s,
        CASE WHEN %(lon)s::float8 IS NULL THEN NULL
             ELSE ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326) END)
ON CONFLICT (resident_id, kind, target) DO UPDATE SET label = EXCLUDED.label
RETURNING id
"""
#: the columns a subscription is shown with (here, in the export and on /me)
SUBSCRIPTION_COLUMNS = """
s.id, s.kind, s.target, s.label, s.layer, s.radius_m,
ST_Y(s.geom) AS lat, ST_X(s.geom) AS lon, s.created_at
"""
_LIST = f"""
SELECT {SUBSCRIPTION_COLUMNS} FROM resident_subscriptions s
WHERE s.resident_id = %(r)s ORDER BY s.id DESC
"""
_ONE = f"""
SELECT {SUBSCRIPTION_COLUMNS} FROM resident_subscriptions s
WHERE s.resident_id = %(r)s AND s.id = %(id)s
"""
_DELETE = (
    "DELETE FROM resident_subscriptions WHERE resident_id = %(r)s AND id = %(id)s RETURNING id"
)


class NewSubscription(BaseModel):
    """``{"kind": "matter"|"domain"|"facility", "id"}`` or an area."""

    kind: Literal["matter", "domain", "facility", "area"]
    id: str | None = Field(None, max_length=200)
    layer: str | None = Field(None, max_length=50)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    radius_m: float | None = Field(None, gt=0)


def area_label(layer: str, lat: float, lon: float, radius_m: float, lang: str) -> str:
    """How an area subscription reads ("toilets within 500 m of 22.54800, 114.11800")."""
    name = layers.all_layers()[layer].names[lang] if layer in layers.all_layers() else layer
    return text(lang, "area_label", layer=name, radius=f"{radius_m:g}",
                point=f"{lat:.5f}, {lon:.5f}")  # fmt: skip


def reason(kind: str | None, label: str | None, row: dict[str, Any], lang: str) -> str:
    """Why an item is in a resident's feed, in their language."""
    if kind is None:
        return text(lang, "reason_case")
    if kind == "area" and row.get("via_layer") is not None:
        lat, lon = row.get("via_lat"), row.get("via_lon")
        if lat is not None and lon is not None:
            label = area_label(str(row["via_layer"]), lat, lon, float(row["via_radius"]), lang)
    if kind == "domain" and label in layers.DOMAINS:
        label = layers.DOMAINS[label][lang]
    return text(lang, f"reason_{kind}", label=label or "")


def subscription_json(row: dict[str, Any], lang: str) -> dict[str, Any]:
    """A stored subscription as the API shows it."""
    out: dict[str, Any] = {"id": row["id"], "kind": row["kind"], "created_at": row["created_at"]}
    if row["kind"] == "area":
        out |= {"layer": row["layer"], "lat": row["lat"], "lon": row["lon"],
                "radius_m": row["radius_m"],
                "label": area_label(row["layer"], row["lat"], row["lon"], row["radius_m"], lang)}  # fmt: skip
    else:
        label = row["label"]
        if row["kind"] == "domain" and label in layers.DOMAINS:
            label = layers.DOMAINS[label][lang]
        out |= {"target": row["target"], "label": label}
    return out


async def _resolve(conn: Any, body: NewSubscription, max_radius_m: float) -> dict[str, Any]:
    """The row to store for a new subscription, or InvalidParameter/NotFound naming the field."""
    values: dict[str, Any] = {"kind": body.kind, "layer": None, "radius": None, "lat": None,
                              "lon": None}  # fmt: skip
    if body.kind == "area":
        if body.layer is None or body.lat is None or body.lon is None or body.radius_m is None:
            raise InvalidParameter("an area needs body fields 'layer', 'lat', 'lon', 'radius_m'")
        if body.layer not in layers.all_layers():
            raise InvalidParameter(f"body field 'layer': one of {', '.join(layers.all_layers())}")
        if body.radius_m > max_radius_m:
            raise InvalidParameter(f"body field 'radius_m': at most {max_radius_m:g} m")
        target = f"{body.layer}@{body.lat:.6f},{body.lon:.6f}+{body.radius_m:g}"
        return values | {"target": target, "label": target, "layer": body.layer,
                         "radius": body.radius_m, "lat": body.lat, "lon": body.lon}  # fmt: skip
    if not body.id:
        raise InvalidParameter("body field 'id' is required for a matter, domain or facility")
    if body.kind == "domain":
        if body.id not in layers.DOMAINS:
            raise InvalidParameter(f"body field 'id': a domain, one of {', '.join(layers.DOMAINS)}")
        return values | {"target": body.id, "label": body.id}
    query = _MATTER if body.kind == "matter" else _FACILITY
    row = await (await conn.execute(query, {"id": body.id})).fetchone()
    if row is None:
        raise NotFound(f"no {body.kind} with id {body.id!r}")
    return values | {"target": body.id, "label": row["title" if body.kind == "matter" else "name"]}


async def list_for(pool: Any, resident_id: int, lang: str) -> list[dict[str, Any]]:
    """A resident's subscriptions as the API shows them, newest first."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(_LIST, {"r": resident_id})).fetchall()
    return [subscription_json(r, lang) for r in rows]


@router.post("/subscriptions", status_code=201)
async def add_subscription(
    body: NewSubscription, resident: ResidentDep, pool: PrimaryPoolDep, settings: SettingsDep
) -> dict[str, int]:
    """Follow a matter, a domain, a facility or an area → 201 ``{"id"}`` (the same id again)."""
    s = settings.residents
    async with pool.connection() as conn, conn.transaction():
        values = await _resolve(conn, body, s.max_radius_m)
        count = await (await conn.execute(_COUNT, {"r": resident.id})).fetchone()
        if count is not None and count["n"] >= s.max_subscriptions:
            raise InvalidParameter(f"at most {s.max_subscriptions} subscriptions per resident")
        row = await (await conn.execute(_ADD, values | {"r": resident.id})).fetchone()
    assert row is not None
    return {"id": int(row["id"])}


@router.get("/subscriptions")
async def list_subscriptions(
    resident: ResidentDep, pool: PrimaryPoolDep
) -> dict[str, list[dict[str, Any]]]:
    """Everything the resident follows, newest first."""
    return {"subscriptions": await list_for(pool, resident.id, resident.lang)}


@router.get("/subscriptions/{subscription_id}")
async def get_subscription(
    resident: ResidentDep, pool: PrimaryPoolDep, subscription_id: int = PathParam(ge=1)
) -> dict[str, Any]:
    """One subscription of the resident's."""
    async with pool.connection() as conn:
        row = await (await conn.execute(_ONE, {"r": resident.id, "id": subscription_id})).fetchone()
    if row is None:
        raise NotFound(f"no subscription {subscription_id}")
    return subscription_json(row, resident.lang)


@router.delete("/subscriptions/{subscription_id}", status_code=204)
async def delete_subscription(
    resident: ResidentDep, pool: PrimaryPoolDep, subscription_id: int = PathParam(ge=1)
) -> Response:
    """Stop following."""
    async with pool.connection() as conn:
        params = {"r": resident.id, "id": subscription_id}
        row = await (await conn.execute(_DELETE, params)).fetchone()
    if row is None:
        raise NotFound(f"no subscription {subscription_id}")
    return Response(status_code=204)
