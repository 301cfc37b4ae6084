"""OGC API - Tiles: every layer as Mapbox Vector Tiles in WebMercatorQuad, built by PostGIS.

What a tile holds and how it is kept so:

- A facility's position in the tile is computed from its lon/lat by arithmetic (``_U``, ``_V``:
  the spherical Mercator of EPSG:3857, rounded as ``ST_AsMVTGeom`` rounds), not by
  ``ST_Transform`` + ``ST_AsMVTGeom`` per row; the index pre-selects the tile's box in WGS 84
  (computed once per query) and the exact test is on the rounded tile coordinates. A point's
  position in the next tile is exactly its position minus ``EXTENT``, so it is at home (in
  [0, EXTENT)) in exactly one tile.
- From zoom ``DETAIL_ZOOM`` (14) every live facility whose point lies in the tile or within
  ``BUFFER`` units (of ``EXTENT``) of its edge is one feature, exactly as ``ST_AsMVTGeom`` with
  that buffer would keep it. The margin lets a renderer draw an icon on a tile edge whole.
- Below it, facilities are aggregated: the tile is cut into ``GRID`` × ``GRID`` cells (4 px at
  256 px) and each non-empty cell is one feature at the position of its facility with the
  smallest id, carrying that facility's properties and ``count``, the number of facilities at
  home in the cell (no margin: the counts of the tiles of a zoom take each facility once). The
  tileset metadata says so.
- ``open_now`` follows the OSM ``opening_hours`` in the district's time zone: evaluated in
  Python once per distinct expression (not per facility) and handed to the query as
  (expression, open) arrays; a state is reused until its next change (``next_change``). An
  expression the process has not seen yet is evaluated and the tile built again.
- ETag: a hash of the tile's bytes, so it changes exactly when what the tile shows changes (a
  load, a sensor reading, an opening or closing); ``If-None-Match`` gets 304.
  ``Cache-Control: max-age`` is at most ``MAX_AGE_S`` (``LIVE_MAX_AGE_S`` for layers with live
  status) and never reaches past the next opening/closing of any facility in the tile.
- Each process keeps the tiles it built (``TileCache``, least recently used dropped first) with
  the tile's version row (``_VERSIONS``: ``facilities_version``, which a trigger bumps in the
  writer's transaction after any change to facilities, migration 0009; for live layers the
  tile's sensors' stalls, last reading and how many are online now) and the generation of the
  opening states. A request reads that row (one row, and for live layers the tile's sensors,
  not its facilities) and gets the kept tile only while it is unchanged, so a load or a sensor
  reading is seen by the very next request. Requests for a tile being built await that build
  (one per tile and version), and a process builds at most ``MAX_BUILDS`` tiles at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
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

#: a facility's position in tile units (0..EXTENT from the tile's left and top edges, rounded
#: as ST_AsMVTGeom rounds), by arithmetic from lon/lat: the spherical Mercator of EPSG:3857
#: scaled to the zoom's 2^z tiles. The same as ST_AsMVTGeom(ST_Transform(geom, 3857), …) at a
#: fraction of its cost, and exact across tiles: a point's u in the next tile is exactly u - EXTENT
#: (the tile's column is subtracted from the world position, never a rounded edge), so no point
#: is in two tiles or in none.
_U = f"round(((ST_X(f.geom) + 180.0) / 360.0 * %(n)s - %(x)s) * {EXTENT})"
_V = (
    "round(((1.0 - ln(tan(radians(ST_Y(f.geom))) + 1.0 / cos(radians(ST_Y(f.geom)))) / pi())"
    f" / 2.0 * %(n)s - %(y)s) * {EXTENT})"
)
#: the index pre-filter: the tile, its margin and one more unit, as a WGS 84 box (computed once
#: per query); `&&` on the indexed geometry takes a little more (float4 boxes), never less
_FILTER_BOX = "ST_Transform(ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => %(margin)s), 4326)"
_PROPERTIES = "f.id, f.name, f.layer, f.status, f.accessible, hours.open AS open_now"
#: a toilet's live status as GET /api/v1/toilets/{id}/status has it (registered device only)
_LIVE_PROPERTIES = (
    ", s.stalls_total, CASE WHEN s.last_seen > now() - make_interval(secs => %(online_s)s)"
    " THEN s.stalls_free END AS stalls_free,"
    " CASE WHEN s.facility_id IS NOT NULL"
    " THEN coalesce(s.last_seen > now() - make_interval(secs => %(online_s)s), false) END AS online"
)
_LIVE_JOIN = (
    " LEFT JOIN toilet_status s ON s.facility_id = f.id AND EXISTS (SELECT 1 FROM toilet_devices d"
    " WHERE d.facility_id = s.facility_id AND d.revoked_at IS NULL)"
)
_HOURS_TABLE = """
WITH hours(expression, open, until) AS (
    SELECT * FROM unnest(%(expressions)s::text[], %(open)s::boolean[], %(until)s::float8[])
)"""
#: The layer's facilities in the tile's box, each with its tile position (u, v): the box (with
#: the margin and one unit more) takes every facility the tile keeps, and a few more that `inside`
#: drops. `(f.layer = …) IS TRUE` keeps the planner from ANDing the layer's whole btree bitmap
#: (half the table for toilets) with the few thousand rows of the box.
_POSITIONED = f"""
SELECT f.id, f.name, f.layer, f.status, f.accessible, f.opening_hours, {_U} AS u, {_V} AS v
FROM facilities f
WHERE {facility.live("f")} AND (f.layer = %(layer)s) IS TRUE AND f.geom && {_FILTER_BOX}
OFFSET 0
"""
_INSIDE = "f.u BETWEEN %(low)s AND %(high)s AND f.v BETWEEN %(low)s AND %(high)s"
_UNKNOWN = "f.opening_hours IS NOT NULL AND hours.expression IS NULL"
#: From DETAIL_ZOOM: every facility inside, its properties, at its position (ST_AsMVT takes tile
#: coordinates as they are); when the first of their open_now ends; whether one is unknown. The
#: facilities outside are dropped by the aggregates' FILTER rather than a WHERE, whose
#: selectivity the planner cannot know: it would plan the joins for one row.
_DETAIL = f"""{_HOURS_TABLE}
SELECT ST_AsMVT(feature, %(layer)s, {EXTENT}, 'geom') FILTER (WHERE {_INSIDE}) AS mvt,
       min(hours.until) FILTER (WHERE {_INSIDE}) AS until,
       coalesce(bool_or({_UNKNOWN}) FILTER (WHERE {_INSIDE}), false) AS unknown
FROM ({_POSITIONED}) f LEFT JOIN hours ON hours.expression = f.opening_hours{{live_join}}
CROSS JOIN LATERAL (SELECT {{properties}}, ST_Point(f.u, f.v) AS geom) feature
"""
#: Below DETAIL_ZOOM: one feature per non-empty GRID x GRID cell, at (and with the properties
#: of) its facility with the smallest id, with `count`, the facilities inside in the cell.
_AGGREGATED = f"""{_HOURS_TABLE},
tile AS MATERIALIZED (
    SELECT f.*, hours.open AS open_now, hours.until, {_UNKNOWN} AS unknown,
           (f.u::int / {EXTENT // GRID}) * {GRID} + f.v::int / {EXTENT // GRID} AS cell
    FROM ({_POSITIONED}) f LEFT JOIN hours ON hours.expression = f.opening_hours
    WHERE {_INSIDE}
)
SELECT (SELECT ST_AsMVT(feature, %(layer)s, {EXTENT}, 'geom')
        FROM (SELECT DISTINCT ON (cell) f.*, count(*) OVER (PARTITION BY cell) AS count
              FROM tile f ORDER BY cell, id) f{{live_join}}
        CROSS JOIN LATERAL (SELECT {{properties}}, f.count, ST_Point(f.u, f.v) AS geom) feature
       ) AS mvt,
       (SELECT min(until) FROM tile) AS until,
       (SELECT coalesce(bool_or(unknown), false) FROM tile) AS unknown
"""


def tile_query(live: bool, detailed: bool) -> sql.SQL:
    """The tile query of a layer with or without live status, detailed or aggregated."""
    properties = _PROPERTIES if detailed else _PROPERTIES.replace("hours.open", "f.open_now")
    query = (_DETAIL if detailed else _AGGREGATED).format(
        properties=properties + (_LIVE_PROPERTIES if live else ""),
        live_join=_LIVE_JOIN if live else "",
    )
    return sql.SQL(query)


#: the opening_hours of the facilities of a tile (learnt when one is unknown)
_HOURS = f"""
SELECT DISTINCT f.opening_hours FROM facilities f
WHERE {facility.live("f")} AND (f.layer = %(layer)s) IS TRUE AND f.geom && {_FILTER_BOX}
      AND f.opening_hours IS NOT NULL
"""

#: What a tile shows depends on, read without building it: every facility (facilities_version,
#: bumped by a trigger on any change to facilities, migration 0009) and, for live layers, the
#: tile's sensors (stalls, last reading, how many are online now), read from toilet_status joined
#: to the facilities of the tile's box. A kept tile is served only while it is unchanged.
_VERSIONS = {
    False: "SELECT n AS facilities FROM facilities_version",
    True: f"""
SELECT (SELECT n FROM facilities_version) AS facilities, count(*) AS sensors,
       sum(s.stalls_total) AS stalls, sum(s.stalls_free) AS free, max(s.last_seen) AS seen,
       count(*) FILTER (WHERE s.last_seen > now() - make_interval(secs => %(online_s)s)) AS online
FROM toilet_status s JOIN facilities f ON f.id = s.facility_id
WHERE (f.layer = %(layer)s) IS TRUE AND f.geom && {_FILTER_BOX}
      AND EXISTS (SELECT 1 FROM toilet_devices d
                  WHERE d.facility_id = s.facility_id AND d.revoked_at IS NULL)
""",
}
#: bytes of tiles a process keeps (least recently used dropped first)
CACHE_BYTES = 64 * 1024 * 1024
#: tiles a process builds at once (more wait): a dense tile takes a core for a second or more
MAX_BUILDS = 2


def etag_of(payload: bytes) -> str:
    """The ETag of a response body: a hash of its bytes."""
    return '"' + hashlib.blake2b(payload, digest_size=16).hexdigest() + '"'


@dataclass(frozen=True)
class Tile:
    """A built tile: its bytes, their ETag, and the monotonic time its open_now states end."""

    payload: bytes
    etag: str
    until: float | None


@dataclass
class TileCache:
    """Tiles built, each with the version row it was built at."""

    max_bytes: int = CACHE_BYTES
    size: int = 0
    entries: OrderedDict[tuple[str, int, int, int], tuple[tuple[Any, ...], Tile]] = field(
        default_factory=OrderedDict
    )
    #: builds under way, by tile and version: a request for the same awaits it
    building: dict[tuple[Any, ...], asyncio.Future[Tile]] = field(default_factory=dict)
    #: builds at once in this process
    builds: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_BUILDS))

    def get(self, key: tuple[str, int, int, int], version: tuple[Any, ...]) -> Tile | None:
        """The tile built at exactly this version, if kept."""
        entry = self.entries.get(key)
        if entry is None or entry[0] != version:
            return None
        self.entries.move_to_end(key)
        return entry[1]

    def put(self, key: tuple[str, int, int, int], version: tuple[Any, ...], tile: Tile) -> None:
        """Keep a tile, dropping the least recently used beyond max_bytes."""
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= len(old[1].payload)
        if len(tile.payload) > self.max_bytes // 4:
            return
        self.entries[key] = (version, tile)
        self.size += len(tile.payload)
        while self.size > self.max_bytes:
            _, (_, dropped) = self.entries.popitem(last=False)
            self.size -= len(dropped.payload)


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

    def arrays(self) -> tuple[list[str], list[bool | None], list[float]]:
        """(expressions, open now, monotonic time until which that holds) of every expression
        known, expired ones evaluated anew."""
        clock = time.monotonic()
        expired = [e for e, (_, until) in self.states.items() if until <= clock]
        if expired:
            now = datetime.now(ZoneInfo(self.timezone))
            for expression in expired:
                self._evaluate(expression, now, clock)
        values = self.states.values()
        return list(self.states), [state for state, _ in values], [until for _, until in values]

    def learn(self, expressions: list[str]) -> bool:
        """Evaluate the expressions not known yet; whether there were any."""
        new = [e for e in expressions if e not in self.states]
        if new:
            now, clock = datetime.now(ZoneInfo(self.timezone)), time.monotonic()
            for expression in new:
                self._evaluate(expression, now, clock)
        return bool(new)


def _seconds_left(until: float | None) -> float:
    """Seconds from now to a monotonic time (None: no end)."""
    return float("inf") if until is None else max(0.0, until - time.monotonic())


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


def etagged(
    request: Request, payload: bytes, *, media_type: str, max_age: int, etag: str | None = None
) -> Response:
    """`payload` with an ETag of its bytes (`etag` when known) and Cache-Control; 304 when the
    client has it."""
    etag = etag or etag_of(payload)
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
    "with 'count' = the facilities in the cell (each facility is counted in exactly one tile "
    "of a zoom, so the counts of a tile add up to the facilities inside it)."
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
    built, max_age = await build_tile(
        pool,
        settings,
        _opening_states(request, settings),
        layer.key,
        tile_matrix,
        tile_col,
        tile_row,
        cache=_tile_cache(request),
    )
    return etagged(request, built.payload, media_type=MVT, max_age=max_age, etag=built.etag)


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
) -> tuple[Tile, int]:
    """(the tile, seconds it stays valid) of one layer.

    With a cache, the tile's version row (``_VERSIONS``) is read first: a tile built at the same
    version and the same opening states is served as it was, anything else is built anew.
    """
    live = has_capability(layer, LIVE_STATUS)
    detailed = z >= DETAIL_ZOOM
    buffer = BUFFER if detailed else 0
    params: dict[str, Any] = {
        "z": z,
        "x": x,
        "y": y,
        "n": float(2**z),
        "layer": layer,
        # tile units kept: [-BUFFER, EXTENT + BUFFER] from DETAIL_ZOOM (as ST_AsMVTGeom keeps),
        # [0, EXTENT) below (each facility in exactly one tile, so counts add up)
        "low": -buffer,
        "high": EXTENT + buffer if detailed else EXTENT - 1,
        "margin": (buffer + 1) / EXTENT,
        "online_s": settings.toilets.online_window_s,
    }
    limit = LIVE_MAX_AGE_S if live else MAX_AGE_S
    params["expressions"], params["open"], params["until"] = states.arrays()
    if cache is None:
        tile = await _build(pool, states, _QUERIES[(live, detailed)], params)
        return tile, int(min(limit, _seconds_left(tile.until)))
    async with pool.connection() as conn:
        cursor = await conn.execute(_VERSIONS[live], params, prepare=True)
        found = await cursor.fetchone()
    assert found is not None
    key, version = (layer, z, x, y), (*found.values(), states.generation)
    cached = cache.get(key, version)
    if cached is None:
        # one build per tile and version at a time, a task of its own that every request for
        # it meanwhile awaits (one leaving early stops nothing), and at most MAX_BUILDS builds
        # at once: a burst of requests for a dense tile neither builds it many times over nor
        # starves the database
        flight = cache.building.get((key, version))
        if flight is None:
            flight = asyncio.ensure_future(
                _build_and_keep(
                    pool, states, _QUERIES[(live, detailed)], params, cache, key, version
                )
            )
            cache.building[(key, version)] = flight
            flight.add_done_callback(partial(_landed, cache.building, (key, version)))
        cached = await asyncio.shield(flight)
    return cached, int(min(limit, _seconds_left(cached.until)))


def _landed(
    building: dict[Any, asyncio.Future[Tile]], flight_key: Any, flight: asyncio.Future[Tile]
) -> None:
    building.pop(flight_key, None)
    if not flight.cancelled():
        flight.exception()  # retrieved: each request awaiting it has raised it already


async def _build_and_keep(
    pool: Any,
    states: OpeningStates,
    query: sql.SQL,
    params: dict[str, Any],
    cache: TileCache,
    key: tuple[str, int, int, int],
    version: tuple[Any, ...],
) -> Tile:
    """Build a tile (one of at most MAX_BUILDS at once) and keep it at its version."""
    async with cache.builds:
        tile = await _build(pool, states, query, params)
    if version[-1] == states.generation:
        # (states learnt or changed while building: the version read no longer holds)
        cache.put(key, version, tile)
    return tile


async def _build(pool: Any, states: OpeningStates, query: sql.SQL, params: dict[str, Any]) -> Tile:
    """Build a tile, learning the opening_hours expressions in it that are not known yet."""
    async with pool.connection() as conn:
        while True:
            # binary: the tile's bytes as they are (text would send and parse them as hex)
            cursor = await conn.execute(query, params, prepare=True, binary=True)
            row = await cursor.fetchone()
            assert row is not None
            if not row["unknown"]:
                break
            # an opening_hours expression this process has not evaluated yet: learn the tile's
            cursor = await conn.execute(_HOURS, params, prepare=True)
            states.learn([found["opening_hours"] for found in await cursor.fetchall()])
            params["expressions"], params["open"], params["until"] = states.arrays()
    payload = bytes(row["mvt"] or b"")
    return Tile(payload, etag_of(payload), row["until"])
