"""The resident's own page (``GET /me``) and the unsubscribe page of the digest mails.

Signed out, ``/me`` is the sign-in form: e-mail, the consent text with its checkbox, then the
mailed code. Signed in (the HttpOnly session cookie), it shows what the resident follows, their
feed with the reason for each item, their appointments and cases, the ratings they gave, their
choices (language, mail digests, recommendations), the private Atom address, export and
erasure. The page is rendered on the server from the same queries as the API; its buttons call
the API (same origin, the cookie). Everything the API returns is put on the page as text.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

import layers
from geoservice.api.deps import LangDep, PoolDep, PrimaryPoolDep, SettingsDep
from geoservice.residents.account import CASES, RATINGS, claim_ratings
from geoservice.residents.feed import fan_out_async, feed_page
from geoservice.residents.signin import OptionalResidentDep
from geoservice.residents.subscriptions import list_for
from geoservice.residents.texts import CONSENT, CONSENT_VERSION
from web.i18n import LANGUAGE_LABELS, words
from web.routes import content_security_policy
from web.templating import render

router = APIRouter(include_in_schema=False)

#: feed items shown on the page
FEED_ITEMS = 50


def _headers(settings: Any) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(settings),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Vary": "Accept-Language, Cookie",
    }


@router.get("/me", response_class=HTMLResponse)
async def me_page(
    request: Request,
    resident: OptionalResidentDep,
    pool: PoolDep,
    primary: PrimaryPoolDep,
    settings: SettingsDep,
    lang: LangDep,
) -> HTMLResponse:
    """The resident's page, or the sign-in form."""
    context: dict[str, Any] = {
        "t": words("me", lang), "lang": lang, "languages": LANGUAGE_LABELS,
        "district": settings.district, "resident": None, "consent": CONSENT[lang],
        "consent_version": CONSENT_VERSION, "centre": settings.district.centre,
        "layers": {key: layer.names[lang] for key, layer in layers.all_layers().items()},
    }  # fmt: skip
    if resident is not None:
        if request.query_params.get("lang") is None:
            lang = resident.lang
            context |= {"t": words("me", lang), "lang": lang, "consent": CONSENT[lang],
                        "layers": {k: v.names[lang] for k, v in layers.all_layers().items()}}  # fmt: skip
        async with primary.connection() as conn:
            await claim_ratings(conn, request, resident.id, settings.service.client_salt)
            cases = await (await conn.execute(CASES, {"r": resident.id})).fetchall()
            ratings = await (await conn.execute(RATINGS, {"r": resident.id})).fetchall()
        public_url = settings.service.public_url
        await fan_out_async(primary, settings.residents.max_radius_m)
        context |= {
            "resident": resident,
            "subscriptions": await list_for(primary, resident.id, lang),
            "feed": await feed_page(pool, resident.id, lang, public_url, FEED_ITEMS, None),
            "cases": cases,
            "ratings": ratings,
            "feed_atom": f"{public_url}/api/v1/me/feed.atom?token={resident.feed_key}",
        }
    return HTMLResponse(render("me.html", **context), headers=_headers(settings))


@router.get("/me/unsubscribe", response_class=HTMLResponse)
async def unsubscribe_page(
    settings: SettingsDep,
    lang: LangDep,
    key: Annotated[str, Query(min_length=8, max_length=100)],
) -> HTMLResponse:
    """A button that stops digest mails (a GET changes nothing: mail scanners follow links)."""
    body = render("me_unsubscribe.html", t=words("me", lang), lang=lang, key=key,
                  district=settings.district)  # fmt: skip
    return HTMLResponse(body, headers=_headers(settings))
