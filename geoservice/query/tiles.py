"""OGC API - Tiles: every layer as Mapbox Vector Tiles in WebMercatorQuad, built by PostGIS.

What a tile holds and how it is kept so:

- From zoom ``DETAIL_ZOOM`` (14) every live facility whose point lies in the tile or within
  ``BUFFER`` units (of ``EXTENT``) of its edge is one feature: ``ST_AsMVTGeom`` clips to
  exactly that square, and the index filter only pre-selects a slightly larger box, so nothing
  inside is ever dropped. The margin lets a renderer draw an icon on a tile edge whole.
- Below it, facilities are aggregated: the tile is cut into ``GRID`` × ``GRID`` cells (4 px at
  256 px) and each non-empty cell is one feature at the position of its facility with the
  smallest id, carrying that facility's properties and ``count``, the number of facilities in
  the cell (no margin: the counts of a tile add up to the facilities inside it). The tileset
  metadata says so.
- ``open_now`` follows the OSM ``opening_hours`` in the district's time zone: evaluated in
  Python once per distinct expression (not per facility) and handed to the query as
  (expression, open) arrays; a state is reused until its next change (``next_change``). An
  expression the process has not seen yet is evaluated and the tile built again.
- ETag: a hash of the tile's bytes, so it changes exactly when what the tile shows changes (a
  load, a sensor reading, an opening or closing); ``If-None-Match`` gets 304.
  ``Cache-Control: max-age`` is at most ``MAX_AGE_S`` (``LIVE_MAX_AGE_S`` for layers with live
  status) and never reaches past the next opening/closing of any facility in the tile.
- Each process keeps the tiles it built (``TileCache``, least recently used dropped first) with
  the tile's version row (``_VERSION``: its facilities' count and a checksum of their ids,
  statuses and content hashes; for live layers their sensors' stalls, last reading and how many
  are online now) and the generation of the opening states. A request reads that row (one
  index scan, nothing transformed or encoded) and gets the kept tile only while it is unchanged,
  so a load or a sensor reading is seen by the very next request.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Path, Request, Response
from psycopg import sql

import layers
from geoservice.api.deps import PoolDep, SettingsDep
from geoservice.api.errors import NotFound
from geoservice.settings import Settings
from layers import LIVE_STATUS, facility, has_capability
from layers.hours import open_state

router = APIRouter(prefix="/ogc", tags=["OGC API - Tiles"])

MVT = "application/vnd.mapbox-vector-tile"
JSON = "application/json"
TMS_ID = "WebMercatorQuad"
TMS_URI = "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
CRS_3857 = "http://www.opengis.net/def/crs/EPSG/0/3857"
#: OGC API - Tiles and Tile Matrix Set conformance classes this module implements
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
    "http://www.opengis.net/spec/tms/2.0/conf/tilematrixset",
    "http://www.opengis.net/spec/tms/2.0/conf/json-tilematrixset",
]
REL_TILESETS = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
REL_TILING_SCHEMES = "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"

#: tile coordinate units per tile side
EXTENT = 4096
#: margin around a detailed tile, in tile units (64 = 4 px at 256 px)
BUFFER = 64
#: from this zoom every facility is in the tile; below it, facilities are aggregated
DETAIL_ZOOM = 14
#: cells per tile side when aggregating
GRID = 64
MAX_ZOOM = 22
#: longest Cache-Control max-age of a tile (seconds); a load shows after at most this
MAX_AGE_S = 60
#: ... of a tile of a layer with live status: a sensor reading shows after at most this
LIVE_MAX_AGE_S = 10
#: WebMercatorQuad, zoom 0 (OGC 17-083r4, Annex D)
_SCALE_0 = 559082264.028717
_CELL_0 = 156543.033928041
_ORIGIN = 20037508.3427892

#: the tile as WGS 84 box (index pre-filter) and its Web Mercator envelope (clipping)
_ENVELOPE = "ST_TileEnvelope(%(z)s, %(x)s, %(y)s)"
_FILTER_BOX = (
    "ST_Expand(ST_Transform(ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => %(margin)s), 4326),"
    " 1e-9)"
)
_PROPERTIES = "id, name, layer, status, accessible, open_now"
_LIVE_PROPERTIES = ", stalls_total, stalls_free, online"
#: a toilet's live status as GET /api/v1/toilets/{id}/status has it (registered device only)
_LIVE_COLUMNS = (
    ", s.stalls_total, CASE WHEN s.last_seen > now() - make_interval(secs => %(online_s)s)"
    " THEN s.stalls_free END AS stalls_free,"
    " CASE WHEN s.facility_id IS NOT NULL"
    " THEN coalesce(s.last_seen > now() - make_interval(secs => %(online_s)s), false) END AS online"
)
_LIVE_JOIN = (
    " LEFT JOIN toilet_status s ON s.facility_id = f.id AND EXISTS (SELECT 1 FROM toilet_devices d"
    " WHERE d.facility_id = s.facility_id AND d.revoked_at IS NULL)"
)
_TILE = f"""
WITH hours(expression, open) AS (
    SELECT * FROM unnest(%(expressions)s::text[], %(open)s::boolean[])
),
tile AS (
    SELECT f.id, f.name, f.layer, f.status, f.accessible, hours.open AS open_now,
           f.opening_hours{{live_columns}},
           ST_AsMVTGeom(ST_Transform(f.geom, 3857), {_ENVELOPE}, {EXTENT}, %(buffer)s, true) AS geom
    FROM facilities f LEFT JOIN hours ON hours.expression = f.opening_hours{{live_join}}
    WHERE {facility.live("f")} AND f.layer = %(layer)s AND f.geom && {_FILTER_BOX}
)
SELECT ({{features}}) AS mvt,
       (SELECT array_agg(opening_hours) FROM (SELECT DISTINCT opening_hours FROM tile
        WHERE geom IS NOT NULL AND opening_hours IS NOT NULL) d) AS hours
"""
_DETAIL = f"""
SELECT ST_AsMVT(t, %(layer)s, {EXTENT}, 'geom')
FROM (SELECT {{properties}}, geom FROM tile WHERE geom IS NOT NULL) t
"""
_AGGREGATED = f"""
SELECT ST_AsMVT(t, %(layer)s, {EXTENT}, 'geom')
FROM (
    SELECT DISTINCT ON (cell) {{properties}}, count(*) OVER (PARTITION BY cell) AS count, geom
    FROM (SELECT tile.*, (ST_X(geom)::int / {EXTENT // GRID}) * {GRID + 1}
                         + ST_Y(geom)::int / {EXTENT // GRID} AS cell
          FROM tile WHERE geom IS NOT NULL) c
    ORDER BY cell, id
) t
"""


def tile_query(live: bool, detailed: bool) -> sql.Composed:
    """The tile query of a layer with or without live status, detailed or aggregated."""
    properties = _PROPERTIES + (_LIVE_PROPERTIES if live else "")
    features = (_DETAIL if detailed else _AGGREGATED).format(properties=properties)
    return sql.SQL(_TILE).format(
        live_columns=sql.SQL(_LIVE_COLUMNS if live else ""),
        live_join=sql.SQL(_LIVE_JOIN if live else ""),
        features=sql.SQL(features),
    )


#: What a tile shows depends on, read without building it: its facilities (how many, and a
#: checksum of their ids, statuses and content hashes, which every load keeps: any change of a
#: field, a position or a status changes it) and, for live layers, their sensors (stalls, last
#: reading, how many are online now). A cached tile is served only while this row is unchanged.
_VERSION = f"""
SELECT count(*) AS n,
       bit_xor(hashtextextended(f.id || ' ' || f.status || ' ' || f.content_hash, 0)) AS checksum
       {{live_version}}
FROM facilities f{{live_join}}
WHERE f.layer = %(layer)s AND f.geom && {_FILTER_BOX}
"""
_LIVE_VERSION = (
    ", count(s.facility_id) AS sensors, sum(s.stalls_total) AS stalls,"
    " sum(s.stalls_free) AS free, max(s.last_seen) AS seen,"
    " count(*) FILTER (WHERE s.last_seen > now() - make_interval(secs => %(online_s)s)) AS online"
)
_VERSIONS = {
    live: sql.SQL(_VERSION).format(
        live_version=sql.SQL(_LIVE_VERSION if live else ""),
        live_join=sql.SQL(_LIVE_JOIN if live else ""),
    )
    for live in (False, True)
}
#: bytes of tiles a process keeps (least recently used dropped first)
CACHE_BYTES = 64 * 1024 * 1024


@dataclass
class TileCache:
    """Tiles built, each with the version row it was built at and its opening_hours."""

    max_bytes: int = CACHE_BYTES
    size: int = 0
    entries: OrderedDict[tuple[str, int, int, int], tuple[tuple[Any, ...], bytes, list[str]]] = (
        field(default_factory=OrderedDict)
    )

    def get(
        self, key: tuple[str, int, int, int], version: tuple[Any, ...]
    ) -> tuple[bytes, list[str]] | None:
        """The tile built at exactly this version, if kept."""
        entry = self.entries.get(key)
        if entry is None or entry[0] != version:
            return None
        self.entries.move_to_end(key)
        return entry[1], entry[2]

    def put(
        self,
        key: tuple[str, int, int, int],
        version: tuple[Any, ...],
        tile: bytes,
        hours: list[str],
    ) -> None:
        """Keep a tile, dropping the least recently used beyond max_bytes."""
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= len(old[1])
        if len(tile) > self.max_bytes // 4:
            return
        self.entries[key] = (version, tile, hours)
        self.size += len(tile)
        while self.size > self.max_bytes:
            _, (_, dropped, _) = self.entries.popitem(last=False)
            self.size -= len(dropped)


_QUERIES = {
    (live, detailed): tile_query(live, detailed)
    for live in (False, True)
    for detailed in (False, True)
}


@dataclass
class OpeningStates:
    """``open_now`` of each opening_hours expression seen, each valid until its next change."""

    timezone: str
    #: expression → (open now, monotonic time until which that holds)
    states: dict[str, tuple[bool | None, float]] = field(default_factory=dict)
    #: the longest a computed state is trusted without a known next change (seconds)
    horizon_s: float = 3600.0
    #: counts changes of any state (or new expressions): a tile built before one is stale
    generation: int = 0

    def _evaluate(self, expression: str, now: datetime, clock: float) -> None:
        state, change = open_state(expression, self.timezone, now)
        until = clock + self.horizon_s
        if change is not None:
            until = min(until, clock + max(0.0, (change - now).total_seconds()))
        before = self.states.get(expression)
        if before is None or before[0] != state:
            self.generation += 1
        self.states[expression] = (state, until)

    def arrays(self) -> tuple[list[str], list[bool | None]]:
        """(expressions, open now) of every expression known, expired ones evaluated anew."""
        clock = time.monotonic()
        expired = [e for e, (_, until) in self.states.items() if until <= clock]
        if expired:
            now = datetime.now(ZoneInfo(self.timezone))
            for expression in expired:
                self._evaluate(expression, now, clock)
        return list(self.states), [state for state, _ in self.states.values()]

    def learn(self, expressions: list[str]) -> bool:
        """Evaluate the expressions not known yet; whether there were any."""
        new = [e for e in expressions if e not in self.states]
        if new:
            now, clock = datetime.now(ZoneInfo(self.timezone)), time.monotonic()
            for expression in new:
                self._evaluate(expression, now, clock)
        return bool(new)

    def seconds_valid(self, expressions: list[str]) -> float:
        """How long the states of these expressions hold (seconds from now)."""
        clock = time.monotonic()
        ends = [self.states[e][1] for e in expressions if e in self.states]
        return max(0.0, min(ends) - clock) if ends else float("inf")


def _opening_states(request: Request, settings: Settings) -> OpeningStates:
    states: OpeningStates | None = getattr(request.app.state, "tile_opening_states", None)
    if states is None:
        states = OpeningStates(settings.district.timezone)
        request.app.state.tile_opening_states = states
    return states


def _tile_cache(request: Request) -> TileCache:
    cache: TileCache | None = getattr(request.app.state, "tile_cache", None)
    if cache is None:
        cache = TileCache()
        request.app.state.tile_cache = cache
    return cache


def _base(settings: Settings) -> str:
    # the configured public address, as /ogc's links: responses are cached publicly
    return settings.service.public_url.rstrip("/") + "/ogc"


def _link(href: str, rel: str, type_: str, title: str, **extra: Any) -> dict[str, Any]:
    return {"href": href, "rel": rel, "type": type_, "title": title, **extra}


def landing_links(base: str) -> list[dict[str, Any]]:
    """Links the /ogc landing page adds for tiles (`base` = the /ogc URL)."""
    return [_link(f"{base}/tileMatrixSets", REL_TILING_SCHEMES, JSON, "tile matrix sets")]


def collection_links(base: str, key: str) -> list[dict[str, Any]]:
    """Links a collection adds for its vector tiles."""
    return [
        _link(f"{base}/collections/{key}/tiles", REL_TILESETS, JSON, "vector tilesets"),
    ]


def etagged(request: Request, payload: bytes, *, media_type: str, max_age: int) -> Response:
    """`payload` with an ETag of its bytes and Cache-Control; 304 when the client has it."""
    etag = '"' + hashlib.blake2b(payload, digest_size=16).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={max_age}"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(payload, media_type=media_type, headers=headers)


def _json(request: Request, body: Any, max_age: int = 3600) -> Response:
    return etagged(request, orjson.dumps(body), media_type=JSON, max_age=max_age)


def _layer(collection_id: str) -> layers.Layer:
    known = layers.all_layers()
    if collection_id not in known:
        raise NotFound(f"no collection {collection_id!r}; collections: {', '.join(known)}")
    return known[collection_id]


def _tms(tile_matrix_set_id: str) -> None:
    if tile_matrix_set_id != TMS_ID:
        raise NotFound(f"no tile matrix set {tile_matrix_set_id!r}; tile matrix sets: {TMS_ID}")


def tile_matrix_set() -> dict[str, Any]:
    """WebMercatorQuad as OGC Two Dimensional Tile Matrix Set 2.0 JSON, zooms 0 to MAX_ZOOM."""
    return {
        "id": TMS_ID,
        "title": "Google Maps Compatible for the World",
        "uri": TMS_URI,
        "crs": CRS_3857,
        "orderedAxes": ["X", "Y"],
        "wellKnownScaleSet": "http://www.opengis.net/def/wkss/OGC/1.0/GoogleMapsCompatible",
        "boundingBox": {
            "crs": CRS_3857,
            "orderedAxes": ["X", "Y"],
            "lowerLeft": [-_ORIGIN, -_ORIGIN],
            "upperRight": [_ORIGIN, _ORIGIN],
        },
        "tileMatrices": [
            {
                "id": str(z),
                "scaleDenominator": _SCALE_0 / 2**z,
                "cellSize": _CELL_0 / 2**z,
                "cornerOfOrigin": "topLeft",
                "pointOfOrigin": [-_ORIGIN, _ORIGIN],
                "tileWidth": 256,
                "tileHeight": 256,
                "matrixWidth": 2**z,
                "matrixHeight": 2**z,
            }
            for z in range(MAX_ZOOM + 1)
        ],
    }


def _tileset_summary(base: str, layer: layers.Layer) -> dict[str, Any]:
    href = f"{base}/collections/{layer.key}/tiles/{TMS_ID}"
    return {
        "title": f"{layer.name('en')} ({TMS_ID})",
        "dataType": "vector",
        "crs": CRS_3857,
        "tileMatrixSetURI": TMS_URI,
        "links": [
            _link(href, "self", JSON, "the tileset"),
            _link(
                f"{base}/tileMatrixSets/{TMS_ID}",
                "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme",
                JSON,
                "the tile matrix set",
            ),
            _link(
                f"{href}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}",
                "item",
                MVT,
                "the tiles",
                templated=True,
            ),
        ],
    }


def _vector_layer(layer: layers.Layer) -> dict[str, Any]:
    fields = {
        "id": "the facility's id (GET /api/v1/facilities/{id})",
        "name": "name",
        "layer": "layer key",
        "status": "active or temporarily_closed",
        "accessible": "true/false; absent when unknown",
        "open_now": "open now by its opening hours; absent when unknown",
        "count": f"below zoom {DETAIL_ZOOM} only: facilities in the feature's cell",
    }
    if has_capability(layer.key, LIVE_STATUS):
        fields |= {
            "stalls_total": "stalls of a registered sensor",
            "stalls_free": "free stalls now; absent when the sensor is offline",
            "online": "whether the sensor was heard from recently",
        }
    return {
        "id": layer.key,
        "title": layer.name("en"),
        "geometryDimension": 0,
        "minTileMatrix": "0",
        "maxTileMatrix": str(MAX_ZOOM),
        "propertiesSchema": {
            "type": "object",
            "properties": {k: {"description": v} for k, v in fields.items()},
        },
    }


def openapi_paths(collection_id: dict[str, Any], errors: dict[str, Any]) -> dict[str, Any]:
    """The tile endpoints as OpenAPI 3.0 paths of /ogc/api (relative to /ogc)."""

    def response(description: str) -> dict[str, Any]:
        return {"description": description, "content": {JSON: {"schema": {"type": "object"}}}}

    def path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": schema}

    errors = {code: errors[code] for code in ("404", "422") if code in errors}
    tms = path("tileMatrixSetId", {"type": "string", "enum": [TMS_ID]})
    return {
        "/tileMatrixSets": {
            "get": {
                "operationId": "tileMatrixSets",
                "responses": {"200": response("tile matrix sets")},
            }
        },
        "/tileMatrixSets/{tileMatrixSetId}": {
            "get": {
                "operationId": "tileMatrixSet",
                "parameters": [tms],
                "responses": {"200": response("a tile matrix set"), **errors},
            }
        },
        "/collections/{collectionId}/tiles": {
            "get": {
                "operationId": "tilesets",
                "parameters": [collection_id],
                "responses": {"200": response("the collection's vector tilesets"), **errors},
            }
        },
        "/collections/{collectionId}/tiles/{tileMatrixSetId}": {
            "get": {
                "operationId": "tileset",
                "parameters": [collection_id, tms],
                "responses": {"200": response("a tileset"), **errors},
            }
        },
        "/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}": {
            "get": {
                "operationId": "tile",
                "parameters": [
                    collection_id,
                    tms,
                    path("tileMatrix", {"type": "integer", "minimum": 0, "maximum": MAX_ZOOM}),
                    path("tileRow", {"type": "integer", "minimum": 0}),
                    path("tileCol", {"type": "integer", "minimum": 0}),
                ],
                "responses": {
                    "200": {
                        "description": "a Mapbox Vector Tile (empty when nothing is in it)",
                        "content": {MVT: {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "304": {"description": "not modified (If-None-Match)"},
                    **errors,
                },
            }
        },
    }


THINNING = (
    f"From zoom {DETAIL_ZOOM} every facility inside the tile (and within {BUFFER}/{EXTENT} of a "
    f"tile's side beyond its edge) is a feature. Below zoom {DETAIL_ZOOM} facilities are "
    f"aggregated: the tile is cut into {GRID}x{GRID} cells and each non-empty cell is one "
    "feature placed at, and carrying the properties of, its facility with the smallest id, "
    "with 'count' = the facilities in the cell (the counts of a tile add up to the facilities "
    "inside it)."
)


@router.get("/tileMatrixSets", summary="Tile matrix sets")
async def tile_matrix_sets(request: Request, settings: SettingsDep) -> Response:
    """The one tile matrix set the tiles use: WebMercatorQuad."""
    base = _base(settings)
    body = {
        "tileMatrixSets": [
            {
                "id": TMS_ID,
                "title": "Google Maps Compatible for the World",
                "uri": TMS_URI,
                "links": [_link(f"{base}/tileMatrixSets/{TMS_ID}", "self", JSON, TMS_ID)],
            }
        ]
    }
    return _json(request, body)


@router.get("/tileMatrixSets/{tileMatrixSetId}", summary="A tile matrix set")
async def tile_matrix_set_definition(
    request: Request,
    tile_matrix_set_id: Annotated[str, Path(alias="tileMatrixSetId", max_length=100)],
) -> Response:
    """WebMercatorQuad's definition (OGC Two Dimensional Tile Matrix Set 2.0)."""
    _tms(tile_matrix_set_id)
    return _json(request, tile_matrix_set())


@router.get("/collections/{collectionId}/tiles", summary="A layer's vector tilesets")
async def tilesets(
    request: Request,
    settings: SettingsDep,
    collection_id: Annotated[str, Path(alias="collectionId", max_length=100)],
) -> Response:
    """The tilesets of a layer: Mapbox Vector Tiles in WebMercatorQuad."""
    layer = _layer(collection_id)
    return _json(request, {"tilesets": [_tileset_summary(_base(settings), layer)]})


@router.get("/collections/{collectionId}/tiles/{tileMatrixSetId}", summary="A tileset")
async def tileset(
    request: Request,
    settings: SettingsDep,
    collection_id: Annotated[str, Path(alias="collectionId", max_length=100)],
    tile_matrix_set_id: Annotated[str, Path(alias="tileMatrixSetId", max_length=100)],
) -> Response:
    """The tileset's metadata: its vector layer, properties and what is aggregated below z14."""
    layer = _layer(collection_id)
    _tms(tile_matrix_set_id)
    body = _tileset_summary(_base(settings), layer)
    body |= {
        "description": THINNING,
        "minzoom": 0,
        "maxzoom": MAX_ZOOM,
        "detailZoom": DETAIL_ZOOM,
        "layers": [_vector_layer(layer)],
    }
    return _json(request, body)


@router.get(
    "/collections/{collectionId}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
    summary="A vector tile (Mapbox Vector Tile)",
    response_class=Response,
    responses={200: {"content": {MVT: {}}}},
)
async def tile(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    collection_id: Annotated[str, Path(alias="collectionId", max_length=100)],
    tile_matrix_set_id: Annotated[str, Path(alias="tileMatrixSetId", max_length=100)],
    tile_matrix: Annotated[int, Path(alias="tileMatrix", ge=0, le=MAX_ZOOM)],
    tile_row: Annotated[int, Path(alias="tileRow", ge=0)],
    tile_col: Annotated[int, Path(alias="tileCol", ge=0)],
) -> Response:
    """The layer's facilities in one tile; every one from zoom 14, aggregated per cell below."""
    layer = _layer(collection_id)
    _tms(tile_matrix_set_id)
    size = 2**tile_matrix
    if tile_row >= size or tile_col >= size:
        raise NotFound(
            f"tile {tile_matrix}/{tile_row}/{tile_col} is outside the tile matrix: "
            f"tileRow and tileCol must be below {size} at tileMatrix {tile_matrix}"
        )
    payload, max_age = await build_tile(
        pool,
        settings,
        _opening_states(request, settings),
        layer.key,
        tile_matrix,
        tile_col,
        tile_row,
        cache=_tile_cache(request),
    )
    return etagged(request, payload, media_type=MVT, max_age=max_age)


async def build_tile(
    pool: Any,
    settings: Settings,
    states: OpeningStates,
    layer: str,
    z: int,
    x: int,
    y: int,
    *,
    cache: TileCache | None = None,
) -> tuple[bytes, int]:
    """(the MVT bytes, seconds they stay valid) of one tile of one layer.

    With a cache, the tile's version row (``_VERSION``) is read first: a tile built at the same
    version and the same opening states is served as it was, anything else is built anew.
    """
    live = has_capability(layer, LIVE_STATUS)
    detailed = z >= DETAIL_ZOOM
    query = _QUERIES[(live, detailed)]
    params: dict[str, Any] = {
        "z": z,
        "x": x,
        "y": y,
        "layer": layer,
        "buffer": BUFFER if detailed else 0,
        "margin": BUFFER / EXTENT if detailed else 0.0,
        "online_s": settings.toilets.online_window_s,
    }
    limit = LIVE_MAX_AGE_S if live else MAX_AGE_S
    key = (layer, z, x, y)
    async with pool.connection() as conn:
        version: tuple[Any, ...] = ()
        if cache is not None:
            params["expressions"], params["open"] = states.arrays()
            cursor = await conn.execute(_VERSIONS[live], params, prepare=True)
            found = await cursor.fetchone()
            assert found is not None
            version = (*found.values(), states.generation)
            cached = cache.get(key, version)
            if cached is not None:
                tile, hours = cached
                return tile, int(min(limit, states.seconds_valid(hours)))
        while True:
            params["expressions"], params["open"] = states.arrays()
            cursor = await conn.execute(query, params, prepare=True)
            row = await cursor.fetchone()
            assert row is not None
            hours = row["hours"] or []
            if not states.learn(hours):
                break
    tile = bytes(row["mvt"] or b"")
    if cache is not None:
        # states learnt or changed while building: the version read before no longer holds
        if version[-1] == states.generation:
            cache.put(key, version, tile, hours)
    return tile, int(min(limit, states.seconds_valid(hours)))
