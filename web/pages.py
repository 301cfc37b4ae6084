"""Facility pages (what a QR code opens) and their QR codes.

- ``GET /facilities/{id}``: a mobile-first HTML page in zh-Hans, zh-Hant or en (``?lang=``,
  else Accept-Language): name, address, hours and open-now, phone, accessibility, a small map,
  live status and rating for toilets, navigation links (OpenStreetMap; Amap with the point in
  GCJ-02) and the facility's disclosure documents by the five stages. Readable without JS.
- ``GET /facilities/{id}/qr.svg`` and ``/qr.png``: the QR code of the page's public URL.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import opencc
import prcoords
from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response

import layers
from geoservice.api.deps import LangDep, PoolDep, SettingsDep
from geoservice.api.errors import NotFound
from geoservice.disclosures.routes import facility_disclosure_groups
from geoservice.query.facilities import get_facility
from geoservice.query.pages import facility_name
from geoservice.settings import Settings
from web.i18n import LANGUAGE_LABELS, OG_LOCALE, words
from web.qr import facility_url, png, svg
from web.routes import content_security_policy
from web.templating import render

router = APIRouter(include_in_schema=False)

MAX_ID_LENGTH = 200


def osm_directions_url(lat: float, lon: float) -> str:
    """OpenStreetMap's router with this point as the destination."""
    return "https://www.openstreetmap.org/directions?" + urlencode(
        {"route": f";{lat:.6f},{lon:.6f}"}
    )


def amap_navigation_url(lat: float, lon: float, name: str) -> str:
    """Amap's URI API to navigate to a WGS 84 point (converted to GCJ-02, what Amap uses)."""
    gcj = prcoords.wgs_gcj((lat, lon))
    return "https://uri.amap.com/navigation?" + urlencode(
        {
            "to": f"{gcj.lon:.6f},{gcj.lat:.6f},{name}",
            "mode": "walk",
            "coordinate": "gaode",
            "callnative": "1",
        },
        quote_via=quote,
    )


@lru_cache(maxsize=64)
def _traditional(text: str) -> str:
    """Simplified → Traditional script (the district's own name on zh-Hant pages)."""
    converted: str = opencc.OpenCC("s2t").convert(text)
    return converted


def _display_time(value: Any, timezone: str) -> str | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")


def page_context(
    feature: dict[str, Any], totals: dict[str, int], lang: str, settings: Settings
) -> dict[str, Any]:
    """Everything the facility template shows, already in `lang`."""
    props = feature["properties"]
    lon, lat = feature["geometry"]["coordinates"]
    text = words("facility", lang)
    layer = layers.all_layers().get(props["layer"])
    layer_name = layer.name(lang) if layer else props["layer"]
    name = props.get("name_en") if lang == "en" and props.get("name_en") else props["name"]
    page_url = facility_url(settings.service.public_url, feature["id"])
    district = settings.district.name_en if lang == "en" else settings.district.name
    if lang == "zh-Hant":
        district = _traditional(district)
    if props.get("open_now") is True:
        open_state = ("open", text["open_now"])
    elif props.get("open_now") is False:
        open_state = ("closed", text["closed_now"])
    else:
        open_state = ("unknown", text["hours_unknown"])
    accessible = {True: text["accessible_yes"], False: text["accessible_no"]}.get(
        props.get("accessible"), text["unknown"]
    )
    groups = []
    disclosures = props.get("disclosures") or {}
    for key, names in layers.CATEGORIES.items():
        items = []
        for doc in disclosures.get(key, []):
            matter = doc.get("matter") or {}
            matter_title = (
                matter.get("title_en")
                if lang == "en" and matter.get("title_en")
                else matter.get("title")
            )
            items.append({**doc, "matter_title": matter_title})
        more = max(0, totals.get(key, 0) - len(items))
        groups.append(
            {
                "key": key,
                "name": names[lang],
                "items": items,
                "more": text["more"].format(n=more) if more else None,
                "more_url": "/api/v1/disclosures?"
                + urlencode({"facility": feature["id"], "category": key, "offset": len(items)}),
            }
        )
    live = props.get("live")
    rating = props.get("rating")
    description_parts = [layer_name, props.get("address"), props.get("opening_hours")]
    description = " · ".join(p for p in description_parts if p)
    return {
        "lang": lang,
        "t": text,
        "follow_words": words("me", lang),
        "languages": LANGUAGE_LABELS.items(),
        "id": feature["id"],
        "name": name,
        "other_name": props["name"] if name != props["name"] else props.get("name_en"),
        "layer_key": props["layer"],
        "layer_name": layer_name,
        "colour": layer.colour if layer else "#555",
        "district": district,
        "title": f"{name} · {layer_name} · {district}",
        "description": description,
        "page_url": page_url,
        "og_locale": OG_LOCALE[lang],
        "props": props,
        "status": props.get("status"),
        "status_text": text.get(f"status_{props.get('status')}"),
        "open_state": open_state,
        "accessible": accessible,
        "lat": lat,
        "lon": lon,
        "osm_url": osm_directions_url(lat, lon),
        "amap_url": amap_navigation_url(lat, lon, props["name"]),
        "osm_view_url": f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=18/{lat:.6f}/{lon:.6f}",
        "live_status": layers.has_capability(props["layer"], layers.LIVE_STATUS),
        "live": live,
        "last_seen": _display_time((live or {}).get("last_seen"), settings.district.timezone),
        "rating": rating,
        "groups": groups,
        "tile_url": settings.service.tile_url,
        "tile_attribution": settings.service.tile_attribution,
    }


@router.get("/facilities/{facility_id}", response_class=HTMLResponse)
async def facility_page(
    facility_id: Annotated[str, PathParam(max_length=MAX_ID_LENGTH)],
    pool: PoolDep,
    settings: SettingsDep,
    lang: LangDep,
) -> HTMLResponse:
    """The facility page in the reader's language; a readable 404 page for unknown ids."""
    feature = None
    totals: dict[str, int] = {}
    # PostgreSQL text cannot hold NUL: no stored id has one
    if "\x00" not in facility_id:
        async with pool.connection() as conn:
            feature = await get_facility(conn, facility_id, settings)
            if feature is not None:
                _, totals = await facility_disclosure_groups(conn, facility_id)
    headers = {
        "Vary": "Accept-Language",
        "Cache-Control": "public, max-age=30",
        "Content-Security-Policy": content_security_policy(settings),
    }
    if feature is None:
        body = render(
            "facility.html", missing=True, lang=lang, facility_id=facility_id,
            t=words("facility", lang), languages=LANGUAGE_LABELS.items(),
        )  # fmt: skip
        return HTMLResponse(body, status_code=404, headers=headers)
    context = page_context(feature, totals, lang, settings)
    body = render("facility.html", missing=False, **context)
    return HTMLResponse(body, headers=headers)


async def _require(pool: PoolDep, facility_id: str) -> str:
    if "\x00" in facility_id:
        raise NotFound("no facility with this id")
    async with pool.connection() as conn:
        name = await facility_name(conn, facility_id)
    if name is None:
        raise NotFound(f"no facility with id {facility_id!r}")
    return name


@router.get("/facilities/{facility_id}/qr.svg")
async def facility_qr_svg(
    facility_id: Annotated[str, PathParam(max_length=MAX_ID_LENGTH)],
    pool: PoolDep,
    settings: SettingsDep,
) -> Response:
    """The page's QR code as SVG (for print)."""
    name = await _require(pool, facility_id)
    body = svg(facility_url(settings.service.public_url, facility_id), title=name)
    return Response(
        body,
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400",
                 "Content-Disposition": f'inline; filename="{facility_id}.svg"'},
    )  # fmt: skip


@router.get("/facilities/{facility_id}/qr.png")
async def facility_qr_png(
    facility_id: Annotated[str, PathParam(max_length=MAX_ID_LENGTH)],
    pool: PoolDep,
    settings: SettingsDep,
    scale: Annotated[int, Query(ge=1, le=40, description="pixels per module")] = 10,
) -> Response:
    """The page's QR code as PNG, `scale` pixels per module."""
    await _require(pool, facility_id)
    body = png(facility_url(settings.service.public_url, facility_id), scale=scale)
    return Response(
        body,
        media_type="image/png",
        headers={"Cache-Control": "public, max-age=86400",
                 "Content-Disposition": f'inline; filename="{facility_id}.png"'},
    )  # fmt: skip
