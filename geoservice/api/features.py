"""Facility rows → GeoJSON Features: the one place that shapes a facility for clients."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi import Response

from layers import LIVE_STATUS, has_capability
from layers.facility import SERVED_COLUMNS
from layers.hours import open_now

#: Columns every facility query selects (alias ``f`` for facilities): the served fields of
#: layers.facility, the point as ``lon`` and ``lat`` (the names are constants, never input).
FEATURE_COLUMNS = ", ".join(
    "ST_X(f.geom) AS lon, ST_Y(f.geom) AS lat" if name == "geom" else f"f.{name}"
    for name in SERVED_COLUMNS
)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 text of a timestamp (None stays None)."""
    return value.isoformat() if value is not None else None


def to_feature(
    row: dict[str, Any], *, timezone: str, now: datetime | None = None
) -> dict[str, Any]:
    """A facility row (FEATURE_COLUMNS, plus optional extras) as a GeoJSON Feature.

    Extras a query may add: ``distance_m``; toilets' ``live`` and ``rating`` dicts;
    ``disclosures``; anything in ``row["extra"]`` is merged into properties.
    """
    properties: dict[str, Any] = {
        "layer": row["layer"],
        "name": row["name"],
        "name_en": row.get("name_en"),
        "address": row.get("address"),
        "phone": row.get("phone"),
        "website": row.get("website"),
        "opening_hours": row.get("opening_hours") or row.get("opening_hours_raw"),
        "open_now": open_now(row.get("opening_hours"), timezone, now),
        "accessible": row.get("accessible"),
        "status": row["status"],
        "status_reason": row.get("status_reason"),
        "source": row["source"],
        "source_id": row["source_id"],
        "attributes": row.get("attributes") or {},
        "updated_at": iso(row.get("updated_at")),
        "verified_at": iso(row.get("verified_at")),
    }
    if row.get("distance_m") is not None:
        properties["distance_m"] = round(float(row["distance_m"]), 2)
    if "live" in row or has_capability(row["layer"], LIVE_STATUS):
        properties["live"] = row.get("live")
        properties["rating"] = row.get("rating") or {"average": None, "count": 0}
    elif "rating" in row:
        properties["rating"] = row["rating"]
    if "disclosures" in row:
        properties["disclosures"] = row["disclosures"]
    properties.update(row.get("extra") or {})
    return {
        "type": "Feature",
        "id": row["id"],
        "geometry": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
        "properties": properties,
    }


def feature_collection(features: list[dict[str, Any]], **members: Any) -> dict[str, Any]:
    """A GeoJSON FeatureCollection with optional foreign members (links, counts)."""
    return {"type": "FeatureCollection", "features": features, **members}


#: JSON Schema of a GeoJSON geometry as the API writes it (WGS 84 lon/lat)
GEOMETRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "coordinates"],
    "properties": {
        "type": {"type": "string", "enum": ["Point", "Polygon", "MultiPolygon", "LineString"]},
        "coordinates": {"type": "array"},
    },
}


def feature_schema(properties: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON Schema of a GeoJSON Feature whose properties include these (JSON Schemas by name)."""
    return {
        "type": "object",
        "required": ["type", "geometry", "properties"],
        "properties": {
            "type": {"type": "string", "enum": ["Feature"]},
            "id": {"type": ["string", "integer"]},
            "geometry": {"anyOf": [GEOMETRY_SCHEMA, {"type": "null"}]},
            "properties": {
                "type": "object",
                "properties": properties or {},
                "required": sorted(properties or {}),
            },
        },
    }


def feature_collection_responses(properties: dict[str, Any] | None = None) -> dict[int | str, Any]:
    """FastAPI ``responses`` documenting a 200 GeoJSON FeatureCollection of such features."""
    schema = {
        "type": "object",
        "required": ["type", "features"],
        "properties": {
            "type": {"type": "string", "enum": ["FeatureCollection"]},
            "features": {"type": "array", "items": feature_schema(properties)},
        },
    }
    return {200: {"content": {"application/geo+json": {"schema": schema}}}}


class GeoJSONResponse(Response):
    """A response already serialised with orjson, typed application/geo+json."""

    media_type = "application/geo+json"

    def render(self, content: Any) -> bytes:
        """Serialise with orjson (non-ASCII kept as UTF-8)."""
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content)


def json_response(
    body: Any,
    *,
    media_type: str = "application/json",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """A JSON body serialised once with orjson (several times faster than the stdlib)."""
    return Response(orjson.dumps(body), status_code, headers=headers, media_type=media_type)
