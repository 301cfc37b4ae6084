"""The staff view (``GET /staff``): alerts first, then ratings worst-first and a small map.

The page itself holds no data: it asks for the staff token, keeps it in the tab's
sessionStorage (gone when the tab closes) and calls the staff API with it. Everything the API
returns is put on the page as text (DOM ``textContent``), never as HTML, so a comment holding
``<script>`` shows as those characters.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

import layers
from geoservice.api.deps import LangDep, SettingsDep
from geoservice.toilets.ratings import TOILET_TAGS
from geoservice.toilets.staff import ALERT_KINDS
from web.i18n import LANGUAGES, words
from web.routes import content_security_policy
from web.templating import render

router = APIRouter(include_in_schema=False)

# every alert kind and rating tag the staff API returns has its words on the page
assert all(set(ALERT_KINDS) | set(TOILET_TAGS) <= set(words("staff", lang)) for lang in LANGUAGES)


@router.get("/staff", response_class=HTMLResponse)
async def staff_page(settings: SettingsDep, lang: LangDep) -> HTMLResponse:
    """The staff view: a token form, then alerts, ratings worst-first and a map."""
    config: dict[str, Any] = {
        "text": words("staff", lang),
        "lang": lang,
        "centre": list(settings.district.centre),
        "tiles": settings.service.tile_url,
        "attribution": settings.service.tile_attribution,
        "layers": {key: layer.names[lang] for key, layer in layers.all_layers().items()},
    }
    body = render(
        "staff.html", t=words("staff", lang), lang=lang, district=settings.district, config=config
    )
    return HTMLResponse(
        body,
        headers={
            "Content-Security-Policy": content_security_policy(settings),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Vary": "Accept-Language",
        },
    )
