"""Annotated dependencies that validate and bound request parameters in one place."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

import layers
from geoservice.api.errors import InvalidParameter
from geoservice.api.routing import standby_for
from geoservice.settings import Settings

#: largest bbox a client may ask for, in square degrees (~ a 100 km square at this latitude)
MAX_BBOX_AREA_DEG2 = 1.0


#: the pool's connections yield dict rows (geoservice.db.connection.create_pool sets dict_row)
DictPool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]


def get_pool(request: Request) -> DictPool:
    """The app's database pool (opened by the lifespan)."""
    pool: DictPool = request.app.state.pool
    return pool


def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


# FastAPI runs plain `def` dependencies in a thread pool (a thread hop per request): the
# dependencies themselves are `async def` wrappers of the helpers above.
async def _pool_dependency(request: Request) -> DictPool:
    # reads may go to a standby (geoservice.api.routing); everything else to the primary
    standby = standby_for(request)
    if standby is not None:
        pool: DictPool = standby.pool
        return pool
    return get_pool(request)


async def _primary_pool_dependency(request: Request) -> DictPool:
    return get_pool(request)


async def _settings_dependency(request: Request) -> Settings:
    return get_settings(request)


#: the database for this request: a standby for reads when one may serve it, else the primary
PoolDep = Annotated[DictPool, Depends(_pool_dependency)]
#: always the primary: for reads of credentials and for GETs that write
PrimaryPoolDep = Annotated[DictPool, Depends(_primary_pool_dependency)]
SettingsDep = Annotated[Settings, Depends(_settings_dependency)]


def parse_layer(key: str, parameter: str = "layer") -> str:
    """A known layer key, or InvalidParameter naming the known keys."""
    known = layers.all_layers()
    if key not in known:
        raise InvalidParameter(
            f"{parameter} {key!r} is not a layer; known layers: {', '.join(known)}"
        )
    return key


# The parameter dependencies are `async def` too: in the thread pool, concurrent first
# requests saw the layer registry half-discovered.
async def layer_list(
    layer: Annotated[
        list[str] | None,
        Query(description="layer key(s); repeat or comma-separate; default all", max_length=20),
    ] = None,
) -> list[str]:
    """Layer filter: repeated or comma-separated keys, each known."""
    if not layer:
        return list(layers.all_layers())
    keys = [k.strip() for item in layer for k in item.split(",") if k.strip()]
    return [parse_layer(k) for k in dict.fromkeys(keys)]


LayersDep = Annotated[list[str], Depends(layer_list)]


def parse_bbox(
    value: str | None, *, parameter: str = "bbox", max_area: float = MAX_BBOX_AREA_DEG2
) -> tuple[float, float, float, float] | None:
    """minLon,minLat,maxLon,maxLat in WGS 84, bounded in area; None when absent."""
    if value is None or value == "":
        return None
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 4 or any(p != p or p in (float("inf"), float("-inf")) for p in parts):
        raise InvalidParameter(f"{parameter} must be four numbers minLon,minLat,maxLon,maxLat")
    min_lon, min_lat, max_lon, max_lat = parts
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise InvalidParameter(
            f"{parameter} must satisfy -180 ≤ minLon ≤ maxLon ≤ 180 and -90 ≤ minLat ≤ maxLat ≤ 90"
        )
    if (max_lon - min_lon) * (max_lat - min_lat) > max_area:
        raise InvalidParameter(f"{parameter} covers more than {max_area} square degrees")
    return min_lon, min_lat, max_lon, max_lat


async def bbox_query(
    bbox: Annotated[
        str | None, Query(description="minLon,minLat,maxLon,maxLat (WGS 84)", max_length=200)
    ] = None,
) -> tuple[float, float, float, float] | None:
    """The `bbox` query parameter, validated and bounded."""
    return parse_bbox(bbox)


BBoxDep = Annotated[tuple[float, float, float, float] | None, Depends(bbox_query)]


async def lang_query(request: Request, lang: str | None = Query(None, max_length=10)) -> str:
    """zh-Hans, zh-Hant or en: ?lang=, else Accept-Language, else the district default."""
    if lang is not None:
        if lang not in layers.LANGUAGES:
            raise InvalidParameter(f"lang must be one of {', '.join(layers.LANGUAGES)}")
        return lang
    accept = request.headers.get("accept-language", "").lower()
    for part in accept.split(","):
        tag = part.split(";")[0].strip()
        if tag.startswith(("zh-hant", "zh-tw", "zh-hk", "zh-mo")):
            return "zh-Hant"
        if tag.startswith("zh"):
            return "zh-Hans"
        if tag.startswith("en"):
            return "en"
    default: str = get_settings(request).district.default_lang
    return default


LangDep = Annotated[str, Depends(lang_query)]
