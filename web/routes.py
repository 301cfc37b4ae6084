"""The map page (``GET /``) and the static assets it and the other pages use.

- ``/static/vendor/<package>/<path>``: files of the npm packages in web/package.json, installed
  into web/node_modules by ``make assets`` (never committed).
- ``/static/<path>``: our own scripts and styles in web/static.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from geoservice.api.deps import DictPool, LangDep, PoolDep, SettingsDep
from geoservice.api.errors import NotFound
from geoservice.query import pages as queries
from geoservice.settings import Settings
from web import map as web_map
from web.map import INSTALL_HINT, STATIC_DIR, WEB_DIR, build_map, missing_assets

logger = logging.getLogger("servicemap.web")

router = APIRouter(include_in_schema=False)

#: file types the static routes serve; anything else is 404
STATIC_SUFFIXES = frozenset(
    {".js", ".css", ".map", ".png", ".svg", ".jpg", ".gif", ".webp", ".woff", ".woff2", ".ttf"}
)
#: asset URLs carry ?v=<content hash>: such responses never change
IMMUTABLE = "public, max-age=31536000, immutable"
#: unversioned asset URLs (other pages reference /static/vendor/... directly)
REVALIDATE = "public, max-age=86400"
MAX_PATH_LENGTH = 300


@lru_cache(maxsize=1)
def vendor_packages() -> frozenset[str]:
    """The npm packages web/package.json declares (only they are served)."""
    manifest = json.loads((WEB_DIR / "package.json").read_text(encoding="utf-8"))
    return frozenset(manifest.get("dependencies", {}))


def safe_file(root: Path, relative: str) -> Path | None:
    """`relative` inside `root` as an existing file of a served type; None otherwise."""
    if len(relative) > MAX_PATH_LENGTH or "\\" in relative or "\x00" in relative:
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    base = root.resolve()
    candidate = (base / relative).resolve()
    if not candidate.is_relative_to(base) or candidate.suffix.lower() not in STATIC_SUFFIXES:
        return None
    return candidate if candidate.is_file() else None


def _file_response(path: Path, request: Request) -> Response:
    cache = IMMUTABLE if "v" in request.query_params else REVALIDATE
    return FileResponse(path, headers={"Cache-Control": cache})


@router.get("/static/vendor/{asset_path:path}")
async def vendor_asset(asset_path: str, request: Request) -> Response:
    """A file of an installed npm package, e.g. /static/vendor/leaflet/dist/leaflet.js."""
    segments = asset_path.split("/")
    width = 2 if segments[0].startswith("@") else 1
    package = "/".join(segments[:width])
    if package not in vendor_packages():
        raise NotFound(f"no front-end package {package!r}; served: {sorted(vendor_packages())}")
    # read at request time: `make assets` may run while the server is up
    modules = web_map.NODE_MODULES
    if not (modules / package).is_dir():
        return JSONResponse(
            {"detail": f"front-end assets are not installed: {INSTALL_HINT}"}, status_code=503
        )
    path = safe_file(modules / package, "/".join(segments[width:]))
    if path is None:
        raise NotFound(f"no file {asset_path!r} in the front-end assets")
    return _file_response(path, request)


@router.get("/static/{asset_path:path}")
async def static_asset(asset_path: str, request: Request) -> Response:
    """One of our own scripts or styles (web/static)."""
    path = safe_file(STATIC_DIR, asset_path)
    if path is None:
        raise NotFound(f"no static file {asset_path!r}")
    return _file_response(path, request)


async def layer_counts(pool: DictPool) -> dict[str, int] | None:
    """Facilities per layer (removed ones excluded); None when the database cannot answer."""
    try:
        async with pool.connection(timeout=2) as conn:
            return await queries.layer_counts(conn)
    except (psycopg.Error, TimeoutError) as exc:
        # the page still renders: the legend just has no counts until the database is back
        logger.warning("map page without counts: %s", type(exc).__name__)
        return None


def content_security_policy(settings: Settings) -> str:
    """What the page may load: only this site, plus the base-map tile server's images.

    Scripts only from this site: the page's own inline scripts are added by hash when it is
    served (web.csp.InlineScriptHashes); no 'unsafe-inline'.
    """
    tiles = ""
    url = settings.service.tile_url.strip()
    if url.lower().startswith(("https://", "http://")):
        # a {s} subdomain template becomes a wildcard host
        host = url.split("/")[2].replace("{s}", "*")
        tiles = f" {url.split(':')[0]}://{host}"
    return (
        "default-src 'self'; "
        "script-src 'self'; "
        "style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data:{tiles}; "
        "connect-src 'self'; font-src 'self' data:; object-src 'none'; base-uri 'self'; "
        "frame-ancestors 'self'"
    )


_warned_missing = False


@router.get("/", response_class=HTMLResponse)
async def map_page(pool: PoolDep, settings: SettingsDep, lang: LangDep) -> HTMLResponse:
    """The district map: layers, popups with disclosures, live toilets, near-me, languages."""
    global _warned_missing
    missing = missing_assets()
    if missing and not _warned_missing:
        _warned_missing = True
        logger.warning("front-end assets missing (%s): %s", ", ".join(missing), INSTALL_HINT)
    counts = await layer_counts(pool)
    # Folium renders synchronously: keep it off the event loop
    html = await run_in_threadpool(build_map, settings, lang=lang, counts=counts)
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": content_security_policy(settings),
            "Cache-Control": "no-cache",
            "Vary": "Accept-Language",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "strict-origin-when-cross-origin",
        },
    )
