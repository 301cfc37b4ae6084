"""The open-data page (``GET /downloads``): each layer, its files with their exact sizes,
licence and last update, in the reader's language. The files and their listing come from
``geoservice.query.downloads`` (which builds them once per version of a layer)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

import layers
from geoservice.api.deps import LangDep, SettingsDep
from geoservice.query.downloads import LICENCE, LICENCE_URL, downloads_listing
from web.i18n import LANGUAGE_LABELS, words
from web.routes import content_security_policy
from web.templating import render

router = APIRouter(include_in_schema=False)

#: how each format is labelled on the page
FORMAT_LABELS = {"csv": "CSV", "geojson": "GeoJSON", "gpkg": "GeoPackage"}


@router.get("/downloads", response_class=HTMLResponse)
async def downloads_page(settings: SettingsDep, lang: LangDep) -> HTMLResponse:
    """Every layer's downloads: files and sizes, facilities, licence, last update."""
    zone = ZoneInfo(settings.district.timezone)
    rows = []
    for entry in await downloads_listing(settings):
        last = entry.last_update.astimezone(zone) if entry.last_update else None
        rows.append(
            {
                "layer": entry.layer,
                "name": layers.get_layer(entry.layer).name(lang),
                "facilities": entry.facilities,
                "files": [
                    {"href": f.href, "label": FORMAT_LABELS[f.format], "size": f.size}
                    for f in entry.files
                ],
                "last_update": last,
                "last_update_iso": last.isoformat(timespec="seconds") if last else "",
                "last_update_text": last.strftime("%Y-%m-%d %H:%M") if last else "",
            }
        )
    body = render(
        "downloads.html",
        t=words("downloads", lang),
        lang=lang,
        languages=LANGUAGE_LABELS,
        district=settings.district,
        rows=rows,
        licence=LICENCE,
        licence_url=LICENCE_URL,
    )
    return HTMLResponse(
        body,
        headers={
            "Content-Security-Policy": content_security_policy(settings),
            "Cache-Control": "public, max-age=60",
            "X-Content-Type-Options": "nosniff",
            "Vary": "Accept-Language",
        },
    )
