"""OGC API - Features under /ogc: Part 1 (Core, GeoJSON, OpenAPI 3.0), one collection per
layer, and Part 3 filtering (``filter`` in CQL2 text or JSON over ``/queryables``, compiled by
``geoservice.query.cql2``).

Pages are in a stable order that the indexes deliver without sorting every match: by id, or
with a bbox by distance from the bbox's centre (KNN on the spatial index) then id; a page costs
O(offset + limit) rows however many match.

``numberMatched`` is the exact number of matching facilities, or absent — never an estimate
(GDAL's OAPIF driver stops reading where it says). A whole layer is counted from ``h3_counts``
(each live facility counted once at resolution 0, kept exact by ``h3sync.sync_cells``) when no facility
waits in ``h3_pending``, in the same statement and so the same snapshot as the page; anything
else (a bbox, a filter, cells still pending) is counted exactly up to MATCH_CAP, and beyond it
the member is left out, so no page pays for counting a large match. Without a count, a full
page always links to the next one, and a client reads on until a page comes back short.

Links are built from ``SERVICEMAP_PUBLIC_URL``, never from the request's Host header: the
responses are cached publicly.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Annotated, Any
from urllib.parse import urlencode

import psycopg
from fastapi import APIRouter, Path, Query, Request, Response
from psycopg import sql

import layers
from geoservice.api.deps import PoolDep, SettingsDep, parse_bbox, parse_layer
from geoservice.api.errors import NotFound, ServiceMapError
from geoservice.api.features import FEATURE_COLUMNS, GeoJSONResponse, json_response, to_feature
from geoservice.query import cql2, tiles
from geoservice.settings import Settings
from geoservice.toilets import live
from layers import facility

router = APIRouter(prefix="/ogc", tags=["OGC API - Features"])

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    # Part 2 (CRS by reference), with CRS84 the one CRS offered
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    *cql2.CONFORMANCE,
    *tiles.CONFORMANCE,
]
QUERYABLES_REL = "http://www.opengis.net/def/rel/ogc/1.0/queryables"
JSON = "application/json"
SCHEMA_JSON = "application/schema+json"
GEOJSON = "application/geo+json"
OPENAPI = "application/vnd.oai.openapi+json;version=3.0"
DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
MAX_OFFSET = 10_000_000
#: beyond this many matches (with a bbox or a filter) numberMatched is left out
MATCH_CAP = 3_000
#: how long a computed collection extent is reused (seconds)
EXTENT_TTL_S = 60.0
#: the page size bounds every items response, so a bbox may cover the whole globe
WORLD_AREA = 360.0 * 180.0
MAX_ID_LENGTH = 200

#: the one "not removed" condition (layers.facility), composed into the constants below
_LIVE = facility.live("f")

# (f-strings: {_LIVE} is filled in now, the doubled braces by sql.SQL.format per request)
#: the page and its count in one statement: one snapshot, one round trip
_ITEMS = """
WITH matched AS ({count})
SELECT matched.n AS matched, page.*
FROM matched LEFT JOIN LATERAL ({page}) page ON true
"""
#: a page in id order (the primary key's)
_PAGE_BY_ID = f"""
SELECT {{columns}} FROM facilities f
WHERE {_LIVE} AND f.layer = %(layer)s {{filter}}
ORDER BY f.id
LIMIT %(limit)s OFFSET %(offset)s
"""
_CENTRE = (
    "ST_SetSRID(ST_MakePoint((%(min_lon)s + %(max_lon)s) / 2.0,"
    " (%(min_lat)s + %(max_lat)s) / 2.0), 4326)"
)
#: a page in order of distance from the bbox's centre, then id. The spatial index delivers
#: the distance order alone (a second sort key makes the planner sort every match instead),
#: so the inner query takes the first offset + limit by distance WITH TIES — every facility
#: as near as the last one too — and only those are sorted by (distance, id).
_PAGE_NEAR_CENTRE = f"""
SELECT * FROM (
    SELECT {{columns}}, f.geom <-> {_CENTRE} AS centre_distance FROM facilities f
    WHERE {_LIVE} AND f.layer = %(layer)s {{bbox}} {{filter}}
    ORDER BY f.geom <-> {_CENTRE}
    FETCH FIRST %(reach)s ROWS WITH TIES
) near
ORDER BY near.centre_distance, near.id
LIMIT %(limit)s OFFSET %(offset)s
"""
#: exact, capped: MATCH_CAP + 1 rows at most, so "more than the cap" is told from "the cap"
_COUNT_CAPPED = f"""
SELECT count(*) AS n FROM (
    SELECT 1 FROM facilities f
    WHERE {_LIVE} AND f.layer = %(layer)s {{bbox}} {{filter}}
    LIMIT %(cap)s + 1
) c
"""
#: a whole layer from the per-cell counts (every live facility has one resolution-0 cell);
#: NULL while changed facilities wait for their cells, the counts then lag behind
_COUNT_LAYER = """
SELECT CASE WHEN EXISTS (SELECT 1 FROM h3_pending) THEN NULL
            ELSE (SELECT coalesce(sum(count), 0) FROM h3_counts
                  WHERE resolution = 0 AND layer = %(layer)s) END AS n
"""
#: intersects, not just && (which compares float4-rounded boxes: points up to ~1 m outside)
_BBOX = (
    "AND ST_Intersects(f.geom,"
    " ST_MakeEnvelope(%(min_lon)s, %(min_lat)s, %(max_lon)s, %(max_lat)s, 4326))"
)
_ITEM = sql.SQL("SELECT {columns} FROM facilities f WHERE f.id = %s AND f.layer = %s").format(
    columns=sql.SQL(FEATURE_COLUMNS)
)
_EXTENTS = f"""
SELECT layer, ST_XMin(e) AS min_lon, ST_YMin(e) AS min_lat, ST_XMax(e) AS max_lon,
       ST_YMax(e) AS max_lat
FROM (SELECT layer, ST_Extent(geom) AS e FROM facilities WHERE {facility.live(None)}
      GROUP BY layer) x
"""


class UnsupportedCrs(ServiceMapError):
    """A crs or bbox-crs other than the one offered (OGC: 400)."""

    status_code = 400


def _check_crs(value: str | None, parameter: str) -> None:
    if value not in (None, "", CRS84):
        raise UnsupportedCrs(f"{parameter} {value!r} is not offered; the one CRS is {CRS84}")


#: Part 2: the CRS of the coordinates in a response
_CONTENT_CRS = {"Content-Crs": f"<{CRS84}>"}


def _root(settings: Settings) -> str:
    # the configured public address, not the Host header: responses are cached publicly
    return settings.service.public_url.rstrip("/")


def _base(settings: Settings) -> str:
    return _root(settings) + "/ogc"


def _link(href: str, rel: str, type_: str, title: str | None = None) -> dict[str, str]:
    link = {"href": href, "rel": rel, "type": type_}
    if title:
        link["title"] = title
    return link


def cached_json(request: Request, body: Any, *, max_age: int, media_type: str = JSON) -> Response:
    """JSON with an ETag of its content and Cache-Control; 304 when the client has it."""
    payload = json.dumps(body, ensure_ascii=False, sort_keys=True).encode()
    # one ETag per representation: the media type is part of it when it is not plain JSON
    tagged = payload if media_type == JSON else media_type.encode() + b"\n" + payload
    etag = '"' + hashlib.sha256(tagged).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={max_age}"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(payload, media_type=media_type, headers=headers)


def _layer(collection_id: str) -> layers.Layer:
    if collection_id not in layers.all_layers():
        raise NotFound(
            f"no collection {collection_id!r}; collections: {', '.join(layers.all_layers())}"
        )
    return layers.all_layers()[parse_layer(collection_id, "collectionId")]


async def _extents(request: Request, pool: Any) -> dict[str, list[float]]:
    state = request.app.state
    cached: tuple[float, dict[str, list[float]]] | None = getattr(state, "ogc_extents", None)
    if cached is not None and time.monotonic() - cached[0] < EXTENT_TTL_S:
        return cached[1]
    async with pool.connection() as conn:
        cursor = await conn.execute(_EXTENTS)
        rows = await cursor.fetchall()
    extents = {
        r["layer"]: [r["min_lon"], r["min_lat"], r["max_lon"], r["max_lat"]]
        for r in rows
        if r["min_lon"] is not None
    }
    state.ogc_extents = (time.monotonic(), extents)
    return extents


def _collection(base: str, layer: layers.Layer, extent: list[float], lang: str) -> dict[str, Any]:
    href = f"{base}/collections/{layer.key}"
    return {
        "id": layer.key,
        "title": layer.name(lang),
        "description": " / ".join(dict(layer.names).values()),
        "itemType": "feature",
        "crs": [CRS84],
        "storageCrs": CRS84,
        "extent": {"spatial": {"bbox": [extent], "crs": CRS84}},
        "links": [
            _link(href, "self", JSON, "this collection"),
            _link(f"{href}/items", "items", GEOJSON, "the facilities"),
            *tiles.collection_links(base, layer.key),
            _link(f"{href}/queryables", QUERYABLES_REL, SCHEMA_JSON, "what a filter may name"),
            # the draft's relation name, which GDAL ≤ 3.6 looks for
            _link(f"{href}/queryables", "queryables", SCHEMA_JSON, "what a filter may name"),
        ],
    }


@router.get("", summary="OGC API landing page")
async def landing(request: Request, settings: SettingsDep) -> Response:
    """Links to the API description, conformance and the collections."""
    base = _base(settings)
    root = _root(settings)
    body = {
        "title": f"servicemap: {settings.district.name_en}",
        "description": "Convenience-service facilities as OGC API - Features, one collection per layer",
        "links": [
            _link(base, "self", JSON, "this document"),
            _link(f"{base}/api", "service-desc", OPENAPI, "the API definition"),
            _link(f"{root}/docs", "service-doc", "text/html", "the API documentation"),
            _link(f"{base}/conformance", "conformance", JSON, "conformance classes"),
            _link(f"{base}/collections", "data", JSON, "the collections"),
            *tiles.landing_links(base),
        ],
    }
    return cached_json(request, body, max_age=3600)


@router.get("/conformance", summary="Conformance classes implemented")
async def conformance(request: Request) -> Response:
    """Core, GeoJSON, OpenAPI 3.0; Part 3 filtering with CQL2 text and JSON."""
    return cached_json(request, {"conformsTo": CONFORMANCE}, max_age=3600)


@router.get(
    "/api",
    summary="OpenAPI 3.0 definition of the OGC API",
    responses={200: {"content": {OPENAPI: {"schema": {"type": "object"}}}}},
)
async def api_definition(request: Request, settings: SettingsDep) -> Response:
    """The OGC endpoints described in OpenAPI 3.0 (what GDAL and QGIS read for paging)."""
    body = openapi_document(_root(settings))
    payload = json.dumps(body).encode()
    return Response(payload, media_type=OPENAPI, headers={"Cache-Control": "public, max-age=3600"})


@router.get("/collections", summary="The collections: one per facility layer")
async def collections(
    request: Request, pool: PoolDep, settings: SettingsDep, lang: str = Query("en", max_length=10)
) -> Response:
    """Every layer as a collection with its spatial extent."""
    base = _base(settings)
    extents = await _extents(request, pool)
    language = lang if lang in layers.LANGUAGES else "en"
    body = {
        "links": [_link(f"{base}/collections", "self", JSON, "the collections")],
        "collections": [
            _collection(base, layer, extents.get(key, list(settings.district.bbox)), language)
            for key, layer in layers.all_layers().items()
        ],
    }
    return cached_json(request, body, max_age=60)


@router.get("/collections/{collectionId}", summary="One collection")
async def collection(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    collection_id: Annotated[str, Path(alias="collectionId", max_length=100)],
) -> Response:
    """The layer's description, extent and items link."""
    layer = _layer(collection_id)
    extents = await _extents(request, pool)
    extent = extents.get(layer.key, list(settings.district.bbox))
    return cached_json(request, _collection(_base(settings), layer, extent, "en"), max_age=60)


@router.get("/collections/{collectionId}/queryables", summary="What a filter may name")
async def queryables(
    request: Request,
    settings: SettingsDep,
    collection_id: Annotated[str, Path(alias="collectionId", max_length=100)],
) -> Response:
    """The layer's queryables as a JSON Schema: common properties, then its attributes."""
    layer = _layer(collection_id)
    href = f"{_base(settings)}/collections/{layer.key}/queryables"
    body = cql2.queryables(layer).schema(href)
    # application/schema+json, or plain JSON for a client that accepts only that (GDAL ≤ 3.6
    # refuses any other type here, and then filters everything itself)
    accept = request.headers.get("accept", "")
    plain = "application/json" in accept and SCHEMA_JSON not in accept
    response = cached_json(request, body, max_age=3600, media_type=JSON if plain else SCHEMA_JSON)
    response.headers["Vary"] = "Accept"
    return response


def ogc_bbox(value: str | None) -> tuple[float, float, float, float] | None:
    """OGC bbox: 4 numbers, or 6 (with heights, ignored)."""
    if value is None or value == "":
        return None
    parts = value.split(",")
    if len(parts) == 6:
        parts = [parts[0], parts[1], parts[3], parts[4]]
    return parse_bbox(",".join(parts), max_area=WORLD_AREA)


async def _count_capped(
    conn: psycopg.AsyncConnection[dict[str, Any]],
    where: dict[str, sql.Composable],
    params: dict[str, Any],
) -> int | None:
    """The exact number of matches, or None beyond MATCH_CAP."""
    cursor = await conn.execute(sql.SQL(_COUNT_CAPPED).format(**where), params)
    row = await cursor.fetchone()
    n = int(row["n"]) if row is not None else 0
    return n if n <= MATCH_CAP else None


@router.get(
    "/collections/{collectionId}/items",
    summary="Facilities of a layer, paged",
    response_class=GeoJSONResponse,
)
async def items(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    collection_id: Annotated[str, Path(alias="collectionId", max_length=100)],
    bbox: Annotated[
        str | None,
        Query(description="minLon,minLat,maxLon,maxLat (CRS84); 6 numbers allowed", max_length=200),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, description=f"page size, default {DEFAULT_LIMIT}, at most {MAX_LIMIT}")
    ] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="features to skip")] = 0,
    filter_: Annotated[
        str | None,
        Query(
            alias="filter",
            description="CQL2 over the collection's queryables",
            max_length=cql2.MAX_FILTER_LENGTH,
        ),
    ] = None,
    filter_lang: Annotated[
        str | None, Query(alias="filter-lang", description="cql2-text (default) or cql2-json")
    ] = None,
    filter_crs: Annotated[
        str | None, Query(alias="filter-crs", description="CRS84 only", max_length=200)
    ] = None,
    crs: Annotated[str | None, Query(description="CRS84 only", max_length=200)] = None,
    bbox_crs: Annotated[
        str | None, Query(alias="bbox-crs", description="CRS84 only", max_length=200)
    ] = None,
) -> Response:
    """A GeoJSON FeatureCollection page with next/prev links and, when exact, numberMatched."""
    layer = _layer(collection_id)
    _check_crs(crs, "crs")
    _check_crs(bbox_crs, "bbox-crs")
    box = ogc_bbox(bbox)
    compiled = None
    if filter_ is not None:
        compiled = cql2.parse_filter(filter_, filter_lang, layer, filter_crs)
    # OGC: a limit above the maximum is served at the maximum rather than refused
    limit = min(limit, MAX_LIMIT)
    params: dict[str, Any] = {
        "layer": layer.key,
        "cap": MATCH_CAP,
        "limit": limit,
        "offset": offset,
        "reach": offset + limit,
    }
    where: dict[str, sql.Composable] = {"bbox": sql.SQL(""), "filter": sql.SQL("")}
    page_sql = _PAGE_BY_ID
    if box is not None:
        where["bbox"] = sql.SQL(_BBOX)
        page_sql = _PAGE_NEAR_CENTRE
        params.update(zip(("min_lon", "min_lat", "max_lon", "max_lat"), box, strict=True))
    if compiled is not None:
        where["filter"] = sql.SQL("AND {}").format(compiled.condition)
        params.update(compiled.params)
    whole_layer = box is None and compiled is None
    count = sql.SQL(_COUNT_LAYER if whole_layer else _COUNT_CAPPED).format(**where)
    page = sql.SQL(page_sql).format(columns=sql.SQL(FEATURE_COLUMNS), **where)
    query = sql.SQL(_ITEMS).format(count=count, page=page)
    async with pool.connection() as conn:
        # a filter is a new statement each time: only the fixed shapes are worth preparing
        cursor = await conn.execute(query, params, prepare=compiled is None)
        rows = await cursor.fetchall()
        counted = rows[0]["matched"]
        matched: int | None = None if counted is None else int(counted)
        if whole_layer and matched is None:  # cells pending: count the rows themselves
            matched = await _count_capped(conn, where, params)
        elif not whole_layer and matched is not None and matched > MATCH_CAP:
            matched = None
        found = [r for r in rows if r["id"] is not None]
        await live.attach(conn, found, settings)
    timezone = settings.district.timezone
    features = [to_feature(r, timezone=timezone) for r in found]
    base = f"{_base(settings)}/collections/{layer.key}/items"

    def href(at: int) -> str:
        query_params: dict[str, Any] = {"limit": limit, "offset": at}
        if bbox:
            query_params["bbox"] = bbox
        if filter_ is not None:
            query_params["filter"] = filter_
            if filter_lang:
                query_params["filter-lang"] = filter_lang
            if filter_crs:
                query_params["filter-crs"] = filter_crs
        return f"{base}?{urlencode(query_params)}"

    links = [
        _link(href(offset), "self", GEOJSON, "this page"),
        _link(f"{_base(settings)}/collections/{layer.key}", "collection", JSON, "the collection"),
    ]
    full = len(features) == limit
    if full and (matched is None or offset + limit < matched):
        links.append(_link(href(offset + limit), "next", GEOJSON, "next page"))
    if offset > 0:
        links.append(_link(href(max(0, offset - limit)), "prev", GEOJSON, "previous page"))
    body: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if matched is not None:
        body["numberMatched"] = matched
    body["numberReturned"] = len(features)
    body["links"] = links
    return json_response(body, media_type=GEOJSON, headers=_CONTENT_CRS)


@router.get(
    "/collections/{collectionId}/items/{featureId}",
    summary="One facility",
    response_class=GeoJSONResponse,
)
async def item(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    collection_id: Annotated[str, Path(alias="collectionId", max_length=100)],
    feature_id: Annotated[str, Path(alias="featureId", max_length=MAX_ID_LENGTH)],
    crs: Annotated[str | None, Query(description="CRS84 only", max_length=200)] = None,
) -> Response:
    """A facility of this layer as a GeoJSON Feature."""
    layer = _layer(collection_id)
    _check_crs(crs, "crs")
    async with pool.connection() as conn:
        row = None
        if "\x00" not in feature_id:  # PostgreSQL text cannot hold NUL: no such feature
            cursor = await conn.execute(_ITEM, (feature_id, layer.key), prepare=True)
            row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"no feature {feature_id!r} in collection {layer.key!r}")
        await live.attach(conn, [row], settings)
    feature = to_feature(row, timezone=settings.district.timezone)
    href = f"{_base(settings)}/collections/{layer.key}"
    feature["links"] = [
        _link(f"{href}/items/{feature_id}", "self", GEOJSON, "this feature"),
        _link(href, "collection", JSON, "the collection"),
    ]
    return json_response(feature, media_type=GEOJSON, headers=_CONTENT_CRS)


def openapi_document(root: str) -> dict[str, Any]:
    """OpenAPI 3.0 of the OGC endpoints (FastAPI's own /openapi.json is 3.1)."""

    def response(description: str, media: str) -> dict[str, Any]:
        return {"description": description, "content": {media: {"schema": {"type": "object"}}}}

    collection_id = {
        "name": "collectionId",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(layers.all_layers())},
    }
    crs = {
        "name": "crs",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": [CRS84], "default": CRS84},
    }
    errors = {
        "404": {"description": "not found"},
        "400": {"description": "a filter that does not parse or names an unknown property"},
        "422": {"description": "a parameter is outside what is allowed"},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "servicemap OGC API - Features", "version": "1.0.0"},
        "servers": [{"url": f"{root}/ogc"}],
        "paths": {
            "/": {
                "get": {
                    "operationId": "landing",
                    "responses": {"200": response("landing page", JSON)},
                }
            },
            "/conformance": {
                "get": {
                    "operationId": "conformance",
                    "responses": {"200": response("conformance", JSON)},
                }
            },
            "/collections": {
                "get": {
                    "operationId": "collections",
                    "responses": {"200": response("collections", JSON)},
                }
            },
            "/collections/{collectionId}": {
                "get": {
                    "operationId": "collection",
                    "parameters": [collection_id],
                    "responses": {"200": response("collection", JSON), **errors},
                }
            },
            "/collections/{collectionId}/items": {
                "get": {
                    "operationId": "items",
                    "parameters": [
                        collection_id,
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "style": "form",
                            "explode": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_LIMIT,
                                "default": DEFAULT_LIMIT,
                            },
                        },
                        {
                            "name": "offset",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": MAX_OFFSET,
                                "default": 0,
                            },
                        },
                        {
                            "name": "bbox",
                            "in": "query",
                            "required": False,
                            "style": "form",
                            "explode": False,
                            "schema": {
                                "type": "array",
                                "minItems": 4,
                                "maxItems": 6,
                                "items": {"type": "number"},
                            },
                        },
                        {
                            "name": "filter",
                            "in": "query",
                            "required": False,
                            "description": "CQL2 over the collection's queryables",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "filter-lang",
                            "in": "query",
                            "required": False,
                            # cql-text: the draft's name, which GDAL ≤ 3.6 looks for here
                            "schema": {
                                "type": "string",
                                "enum": list(cql2.LANGUAGES),
                                "default": "cql2-text",
                            },
                        },
                        {
                            "name": "filter-crs",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": [CRS84]},
                        },
                        crs,
                        {**crs, "name": "bbox-crs"},
                    ],
                    "responses": {"200": response("features", GEOJSON), **errors},
                }
            },
            "/collections/{collectionId}/queryables": {
                "get": {
                    "operationId": "queryables",
                    "parameters": [collection_id],
                    "responses": {"200": response("queryables", SCHEMA_JSON), **errors},
                }
            },
            "/collections/{collectionId}/items/{featureId}": {
                "get": {
                    "operationId": "item",
                    "parameters": [
                        collection_id,
                        {
                            "name": "featureId",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        crs,
                    ],
                    "responses": {"200": response("feature", GEOJSON), **errors},
                }
            },
            **tiles.openapi_paths(collection_id, errors),
        },
    }
