"""The district map page, built with Folium: one builder for ``GET /`` and ``servicemap map``.

The page carries no facility markers: the browser (web/static/map.js) loads them per viewport
from the API (H3 aggregates at low zoom, OGC API – Features items by bbox closer in; a layer
dense in view at zoom 15-16 from the vector tiles, drawn on a canvas with leaflet.vectorgrid)
and builds popups from feature properties. The standalone file (``embedded``) instead carries a compact
table of every facility so that it opens offline, with the same script.
"""

from __future__ import annotations

import base64
import hashlib
import html as html_lib
import json
import mimetypes
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import folium
from branca.element import Figure, MacroElement
from folium.template import Template
from psycopg import AsyncConnection

import layers
from geoservice.api.features import to_feature
from geoservice.query import pages as queries
from geoservice.settings import Settings
from geoservice.toilets.live import attach
from web.i18n import LANGUAGE_LABELS, LANGUAGES, TEXT, words
from web.templating import render

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
NODE_MODULES = WEB_DIR / "node_modules"
INSTALL_HINT = "run `make assets` (or `npm ci --prefix web`) to install them"

#: Vendor files the map needs, relative to web/node_modules (served at /static/vendor/...).
VENDOR_JS = (
    "leaflet/dist/leaflet.js",
    "leaflet.markercluster/dist/leaflet.markercluster.js",
    "leaflet.vectorgrid/dist/Leaflet.VectorGrid.bundled.min.js",
)
VENDOR_CSS = (
    "leaflet/dist/leaflet.css",
    "leaflet.markercluster/dist/MarkerCluster.css",
    "leaflet.markercluster/dist/MarkerCluster.Default.css",
)
#: Our own files, relative to web/static (served at /static/...).
OWN_JS = ("follow.js", "map.js")
OWN_CSS = ("map.css",)
ICON_DIR = "@fortawesome/fontawesome-free/svgs/solid"
ICON_CREDIT = "Icons: Font Awesome Free (CC BY 4.0)"

#: zoom from which facilities are drawn one by one (below it: aggregates when many)
DETAIL_ZOOM = 15
#: most facilities of one layer drawn one by one below DETAIL_ZOOM; above it, H3 aggregates
MAX_MARKERS = 1500
#: from DETAIL_ZOOM up to MARKER_ZOOM (exclusive), a layer with more than TILE_BUDGET
#: facilities in view is drawn from the vector tiles on a canvas (one element per tile, not
#: per facility: ~900 marker icons kept the main thread busy 17x longer than ~250 at 20,000
#: facilities, benchmarks/bench_map_viewport.py); from MARKER_ZOOM markers again (few in view,
#: each reachable by keyboard)
MARKER_ZOOM = 17
TILE_BUDGET = 300
#: OGC items page size and most pages followed per layer and viewport
PAGE_LIMIT = 1000
MAX_PAGES = 5
#: how many disclosure titles per stage a popup shows (the facility page has them all)
DISCLOSURES_PER_STAGE = 3
#: radius of the area a near-me search offers to follow (bounded by the residents' maximum)
FOLLOW_RADIUS_M = 500
#: words of the follow buttons the map's script shows, from the residents' table
FOLLOW_WORDS = ("follow", "following")


def missing_assets() -> list[str]:
    """Vendor files the page needs that are not installed (empty when all are there)."""
    return [p for p in (*VENDOR_JS, *VENDOR_CSS) if not (NODE_MODULES / p).is_file()]


@lru_cache(maxsize=64)
def _digest(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def file_version(path: Path) -> str:
    """A short content hash of a file, for cache-busting query strings ('' when missing)."""
    try:
        return _digest(path, path.stat().st_mtime_ns)
    except OSError:
        return ""


@lru_cache(maxsize=64)
def _icon(name: str, mtime_ns: int) -> dict[str, str] | None:
    text = (NODE_MODULES / ICON_DIR / f"{name}.svg").read_text(encoding="utf-8")
    view_box = re.search(r'viewBox="([0-9 .-]+)"', text)
    path = re.search(r'<path[^>]* d="([^"]+)"', text)
    if view_box is None or path is None:
        return None
    return {"viewBox": view_box.group(1), "d": path.group(1)}


def layer_icon(name: str) -> dict[str, str] | None:
    """The Font Awesome icon a layer names, as an SVG viewBox and path; None when unavailable."""
    if not re.fullmatch(r"[a-z0-9-]{1,64}", name):
        return None
    file = NODE_MODULES / ICON_DIR / f"{name}.svg"
    try:
        return _icon(name, file.stat().st_mtime_ns)
    except OSError:
        return None


def json_for_html(value: Any) -> str:
    """JSON that is safe inside a <script> element (no '<', '>' or '&' left raw)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass(frozen=True)
class Asset:
    """A script or stylesheet: a URL, or its text inlined into the page."""

    kind: str  # "js" or "css"
    url: str | None = None
    text: str | None = None


def _read_inline(path: Path, kind: str) -> str:
    text = path.read_text(encoding="utf-8")
    if kind == "css":
        # images a stylesheet references become data URIs so the file stands alone
        def embed(match: re.Match[str]) -> str:
            target = (path.parent / match.group(1)).resolve()
            if not target.is_file() or not target.is_relative_to(NODE_MODULES.resolve()):
                return match.group(0)
            mime = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            data = base64.b64encode(target.read_bytes()).decode()
            return f"url(data:{mime};base64,{data})"

        text = re.sub(r"url\((images/[A-Za-z0-9_.-]+)\)", embed, text)
        return text.replace("</style", "<\\/style")
    return re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE)


def page_assets(*, inline: bool) -> list[Asset]:
    """The page's scripts and styles in load order: served URLs, or inlined text."""
    vendor_version = file_version(WEB_DIR / "package-lock.json")
    assets: list[Asset] = []
    for kind, vendor, own in (("css", VENDOR_CSS, OWN_CSS), ("js", VENDOR_JS, OWN_JS)):
        for rel in vendor:
            if inline:
                assets.append(Asset(kind, text=_read_inline(NODE_MODULES / rel, kind)))
            else:
                assets.append(Asset(kind, url=f"/static/vendor/{rel}?v={vendor_version}"))
        for rel in own:
            if inline:
                assets.append(Asset(kind, text=_read_inline(STATIC_DIR / rel, kind)))
            else:
                version = file_version(STATIC_DIR / rel)
                assets.append(Asset(kind, url=f"/static/{rel}?v={version}"))
    return assets


class DistrictMap(folium.Map):
    """A folium Map that loads nothing from CDNs and lets the reader zoom the page."""

    # Folium's defaults pull jQuery, Bootstrap, awesome-markers and fonts from CDNs; the page
    # brings its own scripts instead (MapApp), all served by the app or inlined
    default_js: list[tuple[str, str]] = []
    default_css: list[tuple[str, str]] = []

    #: the page around the map div (header before it, side panel after it), already escaped
    shell_head = ""
    shell_panel = ""
    #: the map region's accessible name, already escaped
    map_label = ""

    _template = Template(
        """
        {% macro header(this, kwargs) %}
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        {% endmacro %}
        {% macro html(this, kwargs) %}
        {{ this.shell_head }}
        <div class="folium-map sm-map" id={{ this.get_name()|tojson }} role="region"
             aria-label="{{ this.map_label }}" data-i18n-label="title"></div>
        {{ this.shell_panel }}
        {% endmacro %}
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = L.map({{ this.get_name()|tojson }}, {
            center: {{ this.location|tojson }},
            crs: L.CRS.{{ this.crs }},
            ...{{ this.options|tojavascript }}
        });
        {%- if this.control_scale %}
        L.control.scale().addTo({{ this.get_name() }});
        {%- endif %}
        {% endmacro %}
        """
    )


class MapApp(MacroElement):
    """The page around the map: assets, header, side panel, config and the start call."""

    _template = Template(
        """
        {% macro header(this, kwargs) %}
        {%- for asset in this.assets %}
        {%- if asset.kind == "css" and asset.url %}
        <link rel="stylesheet" href="{{ asset.url }}" />
        {%- elif asset.kind == "css" %}
        <style>{{ asset.text }}</style>
        {%- elif asset.url %}
        <script src="{{ asset.url }}"></script>
        {%- else %}
        <script>{{ asset.text }}</script>
        {%- endif %}
        {%- endfor %}
        <script type="application/json" id="sm-config">{{ this.config_json }}</script>
        {% endmacro %}
        {% macro script(this, kwargs) %}
        if (window.ServiceMap) {
            ServiceMap.start({{ this._parent.get_name() }},
                JSON.parse(document.getElementById("sm-config").textContent));
        }
        {% endmacro %}
        """
    )

    def __init__(self, assets: Sequence[Asset], config: Mapping[str, Any]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._name = "MapApp"
        self.assets = list(assets)
        self.config_json = json_for_html(dict(config))


def layer_entries(lang: str, counts: Mapping[str, int] | None, keys: Sequence[str]) -> list[Any]:
    """The layers the page shows: key, names, colour, icon, count (None when unknown)."""
    known = layers.all_layers()
    return [
        {
            "key": key,
            "name": known[key].name(lang),
            "names": dict(known[key].names),
            "colour": known[key].colour,
            "icon": layer_icon(known[key].icon),
            "count": None if counts is None else counts.get(key, 0),
        }
        for key in keys
    ]


def build_map(
    settings: Settings,
    *,
    lang: str,
    counts: Mapping[str, int] | None,
    layer_keys: Sequence[str] | None = None,
    embedded: Mapping[str, Any] | None = None,
    inline_assets: bool = False,
) -> str:
    """The whole map page as HTML: served by ``GET /`` or written by ``servicemap map``.

    `counts` are facilities per layer for the legend (None: unknown, e.g. database down);
    `embedded` is the standalone file's facility table (None: the browser asks the API).
    """
    if lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {', '.join(LANGUAGES)}")
    text = words("map", lang)
    keys = list(layer_keys) if layer_keys else list(layers.all_layers())
    district = settings.district
    service = settings.service
    min_lon, min_lat, max_lon, max_lat = district.bbox
    entries = layer_entries(lang, counts, keys)
    missing = [] if inline_assets else missing_assets()
    tile_url = service.tile_url.strip()
    attribution = service.tile_attribution + " | " + ICON_CREDIT
    config: dict[str, Any] = {
        "lang": lang,
        "languages": LANGUAGE_LABELS,
        # the map's words and the follow buttons' (one table: web/i18n.py)
        "strings": {
            code: {**TEXT["map"][code], **{k: TEXT["me"][code][k] for k in FOLLOW_WORDS}}
            for code in LANGUAGES
        },
        "categories": layers.CATEGORIES,
        "layers": entries,
        "district": {
            "name": district.name,
            "name_en": district.name_en,
            "bbox": [min_lon, min_lat, max_lon, max_lat],
        },
        "tile_url": tile_url if tile_url.lower() not in ("", "none") else None,
        "attribution": attribution,
        "detail_zoom": DETAIL_ZOOM,
        "max_markers": MAX_MARKERS,
        "marker_zoom": MARKER_ZOOM,
        "tile_budget": TILE_BUDGET,
        "page_limit": PAGE_LIMIT,
        "max_pages": MAX_PAGES,
        "per_stage": DISCLOSURES_PER_STAGE,
        "follow_radius_m": min(FOLLOW_RADIUS_M, int(settings.residents.max_radius_m)),
        "facility_url": (service.public_url if embedded is not None else "") + "/facilities/",
        "data": embedded,
    }
    shell = render(
        "map.html",
        lang=lang,
        t=text,
        languages=LANGUAGE_LABELS,
        layers=entries,
        district=district.name if lang != "en" else district.name_en,
        missing=missing,
        install_hint=INSTALL_HINT,
        embedded=embedded is not None,
        metrics=("count", "avg_rating", "free_stalls"),
        # the live-status legend, when a shown layer has live status (the toilets)
        live_status=any(layers.has_capability(key, layers.LIVE_STATUS) for key in keys),
    )

    fmap = DistrictMap(
        location=list(district.centre),
        zoom_start=13,
        tiles=None,
        control_scale=True,
        prefer_canvas=False,
    )
    figure = fmap.get_root()
    assert isinstance(figure, Figure)
    figure.title = html_lib.escape(f"{text['title']} · {district.name}")
    # the shell's header goes before the map in the document (reading and tab order); the
    # side panel after it (the shell is rendered by an autoescaping environment)
    fmap.shell_head, _, fmap.shell_panel = shell.partition("<!-- map -->")
    fmap.map_label = html_lib.escape(text["title"])
    fmap.add_child(MapApp(page_assets(inline=inline_assets), config))
    html: str = figure.render()
    # the root element carries the page language (branca writes a bare <html>)
    return html.replace("<html>", f'<html lang="{lang}">', 1)


#: columns of the standalone file's facility table (one array per facility, in this order)
EMBEDDED_COLUMNS = (
    "id",
    "layer",
    "lon",
    "lat",
    "name",
    "name_en",
    "address",
    "phone",
    "opening_hours",
    "accessible",
    "status",
    "rating_avg",
    "rating_count",
    "live_total",
    "live_free",
    "live_online",
    "live_last_seen",
    "docs",
)
#: most facilities a standalone file carries (it is read whole by a phone's browser)
MAX_EMBEDDED = 200_000


def embedded_row(feature: Mapping[str, Any], layer_index: int, docs: list[str]) -> list[Any]:
    """A facility Feature as one compact row of EMBEDDED_COLUMNS."""
    props = feature["properties"]
    lon, lat = feature["geometry"]["coordinates"]
    live = props.get("live") or {}
    rating = props.get("rating") or {}
    return [
        feature["id"],
        layer_index,
        round(float(lon), 6),
        round(float(lat), 6),
        props["name"],
        props.get("name_en"),
        props.get("address"),
        props.get("phone"),
        props.get("opening_hours"),
        props.get("accessible"),
        props.get("status"),
        rating.get("average"),
        rating.get("count") or 0,
        live.get("stalls_total"),
        live.get("stalls_free"),
        live.get("online") if live else None,
        live.get("last_seen"),
        docs,
    ]


def _text_date(value: Any) -> str:
    if value is None:
        return ""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


async def embedded_data(
    conn: AsyncConnection[dict[str, Any]],
    settings: Settings,
    layer_keys: Sequence[str],
    *,
    generated_at: str,
) -> dict[str, Any]:
    """Every live facility of these layers as the standalone file's compact table.

    Uses the same row shaping (to_feature) and live status as the API, and one set-based query
    for the disclosures (the same documents, in the same order, as a facility's groups): each
    facility keeps its newest DISCLOSURES_PER_STAGE documents per stage, each document stored
    once however many facilities share it.
    """
    rows = await queries.live_facility_rows(conn, layer_keys, limit=MAX_EMBEDDED + 1)
    if len(rows) > MAX_EMBEDDED:
        raise ValueError(f"more than {MAX_EMBEDDED:,} facilities: choose fewer layers with --layer")
    await attach(conn, rows, settings)
    newest = await queries.newest_documents(
        conn, [row["id"] for row in rows], per_stage=DISCLOSURES_PER_STAGE
    )
    index = {key: i for i, key in enumerate(layer_keys)}
    documents: dict[str, list[Any]] = {}
    table = []
    for row in rows:
        feature = to_feature(row, timezone=settings.district.timezone)
        doc_ids: list[str] = []
        for category, docs in newest.get(row["id"], {}).items():
            for doc in docs:
                doc_id = str(doc["id"])
                documents.setdefault(
                    doc_id, [doc["title"], doc["url"], _text_date(doc["published_at"]), category]
                )
                doc_ids.append(doc_id)
        table.append(embedded_row(feature, index[row["layer"]], doc_ids))
    return {
        "generated_at": generated_at,
        "layers": list(layer_keys),
        "columns": list(EMBEDDED_COLUMNS),
        "rows": table,
        "documents": documents,
    }
