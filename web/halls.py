"""Service-hall pages: the hall, the resident's appointment (ticket), the staff window, and one
page per matter and per document, in zh-Hans, zh-Hant and en, phone first.

The hall, appointment, matter and document pages work without JavaScript: booking, walk-in
tickets, check-in, cancelling and rating are plain HTML forms posted here, which call the same
code as the API (``geoservice.halls``) and redirect to the appointment page (303). Scripts only
refresh the live figures (queue, position) in place. The staff window page needs its script
(the staff token stays in the tab's sessionStorage, as on /staff) and is driven by the keyboard:
N call next, R call again, S no-show, 1 done, 2 needs documents, 3 referred.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

import layers
from geoservice.api.deps import LangDep, PoolDep, PrimaryPoolDep, SettingsDep
from geoservice.api.errors import NotFound, ServiceMapError
from geoservice.halls import booking, cases, queue
from geoservice.halls.common import ID_PATTERN, code_or_404, get_hall, now_in
from geoservice.halls.domain import SCALE, bookable_days, normalise_code
from geoservice.halls.pages import document_page, hall_matters, matter_page
from geoservice.settings import Settings
from layers import CATEGORIES, DOMAINS
from web.i18n import LANGUAGE_LABELS, words
from web.qr import SheetItem, png, sheet, svg
from web.routes import content_security_policy
from web.templating import render

router = APIRouter(include_in_schema=False)

PageId = Annotated[str, PathParam(max_length=200)]
#: form bodies are small: a booking is five short fields
MAX_FORM_FIELDS = 20


def _headers(settings: Settings, *, private: bool = False) -> dict[str, str]:
    headers = {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Language",
        "Cache-Control": "no-store" if private else "public, max-age=15",
    }
    if private:  # the URL holds the resident's code: never sent on as a referrer
        headers["Referrer-Policy"] = "no-referrer"
    return headers


def _page(template: str, settings: Settings, lang: str, *, status: int = 200,
          private: bool = False, **context: Any) -> HTMLResponse:  # fmt: skip
    body = render(
        template, t=words("halls", lang), follow_words=words("me", lang), lang=lang,
        languages=LANGUAGE_LABELS,
        district=settings.district, stage_names={c: CATEGORIES[c][lang] for c in CATEGORIES}, **context,
    )  # fmt: skip
    return HTMLResponse(body, status_code=status, headers=_headers(settings, private=private))


def _missing(settings: Settings, lang: str) -> HTMLResponse:
    return _page("halls_missing.html", settings, lang, status=404)


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form body as {field: first value} (no multipart needed for these forms)."""
    raw = (await request.body()).decode("utf-8", "replace")
    fields = parse_qs(raw, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    return {k: v[0] for k, v in fields.items()}


def _title(row: dict[str, Any], lang: str, key: str = "title") -> str:
    english = row.get(f"{key}_en")
    return str(english) if lang == "en" and english else str(row[key])


def _local(value: Any, settings: Settings) -> str:
    if not value:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return str(moment.astimezone(ZoneInfo(settings.district.timezone)).strftime("%Y-%m-%d %H:%M"))


# --- the hall -----------------------------------------------------------------------------


@router.get("/halls/{hall_id}", response_class=HTMLResponse)
async def hall_page(
    hall_id: PageId,
    pool: PoolDep,
    settings: SettingsDep,
    lang: LangDep,
    matter: Annotated[str | None, Query(max_length=200)] = None,
    day: Annotated[str | None, Query(alias="date", max_length=10)] = None,
    error: str | None = None,
) -> HTMLResponse:
    """Live queue, booking form (matter → date → free times), walk-in, each matter's guide."""
    if "\x00" in hall_id:
        return _missing(settings, lang)
    async with pool.connection() as conn:
        try:
            hall = await queue.hall_detail(conn, hall_id, settings)
            live = await queue.queue_state(conn, hall_id, settings)
        except NotFound:
            return _missing(settings, lang)
        handled = {m["id"] for m in hall["matters"]}
        chosen = (
            matter if matter in handled else (hall["matters"][0]["id"] if hall["matters"] else None)
        )
        first, last = bookable_days(hall["booking_days_ahead"], settings.district.timezone)
        try:
            wanted = date.fromisoformat(day) if day else first
        except ValueError:
            wanted = first
        wanted = min(max(wanted, first), last)
        slots: list[booking.SlotOut] = []
        if chosen is not None and day is not None:
            slots = await booking.slots(hall_id, pool, settings, chosen, str(wanted))
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return _page(
        "hall.html", settings, lang, hall=hall, live=live, chosen=chosen, wanted=wanted,
        days=days, slots=slots, show_slots=day is not None, error=error,
        title=lambda row: _title(row, lang), name=_title(hall, lang, "name"),
        live_json=orjson.dumps({"queue": f"/api/v1/halls/{hall['id']}/queue"}).decode(),
    )  # fmt: skip


def _back_to_hall(hall_id: str, message: str, lang: str, matter: str | None = None) -> Response:
    query = {"lang": lang, "error": message[:300]}
    if matter:
        query["matter"] = matter
    return RedirectResponse(f"/halls/{quote(hall_id)}?{urlencode(query)}#book", status_code=303)


@router.post("/halls/{hall_id}/book")
async def hall_book(
    hall_id: PageId, request: Request, pool: PrimaryPoolDep, settings: SettingsDep, lang: LangDep
) -> Response:
    """The booking form: on success to the appointment page, else back with the reason."""
    form = await _form(request)
    try:
        data = booking.BookingIn(
            hall=hall_id, matter=form.get("matter", ""), start=form.get("start", ""),
            name=form.get("name", ""), phone=form.get("phone", ""),
        )  # fmt: skip
        answer = await booking.book(data, request, pool, settings)
    except ValidationError as exc:
        return _back_to_hall(hall_id, _first_error(exc), lang, form.get("matter"))
    except ServiceMapError as exc:
        return _back_to_hall(hall_id, str(exc.detail), lang, form.get("matter"))
    code = orjson.loads(answer.body)["code"]
    return RedirectResponse(f"/appointments/{code}?lang={lang}", status_code=303)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(p) for p in error.get("loc", ()))
    return f"{field}: {error.get('msg', 'invalid')}"


@router.post("/halls/{hall_id}/walk-in")
async def hall_walk_in(
    hall_id: PageId, request: Request, pool: PrimaryPoolDep, settings: SettingsDep, lang: LangDep
) -> Response:
    """A walk-in queue number: on to its page (the code follows the case)."""
    form = await _form(request)
    try:
        ticket = await queue.take_ticket(
            hall_id, queue.TicketIn(matter=form.get("matter", "")), request, pool, settings
        )
    except ValidationError as exc:
        return _back_to_hall(hall_id, _first_error(exc), lang)
    except ServiceMapError as exc:
        return _back_to_hall(hall_id, str(exc.detail), lang)
    return RedirectResponse(f"/appointments/{ticket['code']}?lang={lang}", status_code=303)


@router.get("/halls/{hall_id}/qr-sheet.svg")
async def hall_qr_sheet(
    hall_id: PageId, pool: PoolDep, settings: SettingsDep, lang: LangDep
) -> Response:
    """A printable A4 sheet: the QR code of each matter's page the hall handles."""
    if "\x00" in hall_id:
        raise NotFound("no hall with this id")
    async with pool.connection() as conn:
        hall = await get_hall(conn, hall_id)
        matters = await hall_matters(conn, hall_id)
    base = settings.service.public_url
    items = [SheetItem(_title(m, lang), f"{base}/matters/{quote(m['id'])}") for m in matters]
    return Response(
        sheet(items, title=hall.name), media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=300",
                 "Content-Disposition": f'inline; filename="{hall_id}-matters.svg"'},
    )  # fmt: skip


# --- the resident's appointment / ticket ------------------------------------------------------


@router.get("/appointments/{code}", response_class=HTMLResponse)
async def appointment_page(
    code: Annotated[str, PathParam(max_length=64)],
    pool: PrimaryPoolDep,
    settings: SettingsDep,
    lang: LangDep,
    error: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    """The ticket: hall, matter, time, queue number and position, QR code, progress, rating."""
    key = normalise_code(code)
    if key is None:
        return _missing(settings, lang)
    async with pool.connection() as conn:
        try:
            case = await booking.case_by_code(conn, key, settings)
            progress = await cases.case_progress(conn, key, settings)
        except NotFound:
            return _missing(settings, lang)
    ticket = progress["ticket"]
    now = now_in(settings)
    starts = case["starts_at"]
    opens = starts - timedelta(minutes=settings.halls.check_in_before_min) if starts else None
    return _page(
        "appointment.html", settings, lang, private=True, case=case, progress=progress,
        ticket=ticket, code=key, error=error, scale=SCALE,
        start_text=_local(starts, settings), opens_text=_local(opens, settings),
        can_check_in=case["status"] == "booked" and opens is not None and now >= opens,
        events=[{**e, "at_text": _local(e["at"], settings)} for e in progress["events"]],
        live_json=orjson.dumps({"appointment": f"/api/v1/appointments/{key}"}).decode(),
        hall_name=case["hall_name_en"] if lang == "en" and case["hall_name_en"] else case["hall_name"],
        matter_title=_title({"title": case["matter_title"], "title_en": case["matter_title_en"]}, lang),
    )  # fmt: skip


def _back_to_appointment(code: str, lang: str, message: str | None = None) -> Response:
    query = {"lang": lang} | ({"error": message[:300]} if message else {})
    return RedirectResponse(f"/appointments/{code}?{urlencode(query)}", status_code=303)


@router.post("/appointments/{code}/cancel")
async def appointment_cancel(
    code: Annotated[str, PathParam(max_length=64)],
    pool: PrimaryPoolDep, settings: SettingsDep, lang: LangDep,
) -> Response:  # fmt: skip
    """Cancel from the page."""
    key = code_or_404(code)
    try:
        await booking.cancel(key, pool, settings)
    except ServiceMapError as exc:
        return _back_to_appointment(key, lang, str(exc.detail))
    return _back_to_appointment(key, lang)


@router.post("/appointments/{code}/check-in")
async def appointment_check_in(
    code: Annotated[str, PathParam(max_length=64)], request: Request,
    pool: PrimaryPoolDep, settings: SettingsDep, lang: LangDep,
) -> Response:  # fmt: skip
    """Check in from the page: the queue number appears on it."""
    key = code_or_404(code)
    async with pool.connection() as conn:
        case = await booking.case_by_code(conn, key, settings)
    try:
        await queue.take_ticket(
            case["hall_id"], queue.TicketIn(appointment=key), request, pool, settings
        )
    except ServiceMapError as exc:
        return _back_to_appointment(key, lang, str(exc.detail))
    return _back_to_appointment(key, lang)


@router.post("/appointments/{code}/evaluate")
async def appointment_evaluate(
    code: Annotated[str, PathParam(max_length=64)], request: Request,
    pool: PrimaryPoolDep, settings: SettingsDep, lang: LangDep,
) -> Response:  # fmt: skip
    """The five-level rating from the page."""
    key = code_or_404(code)
    form = await _form(request)
    try:
        score = int(form.get("score", ""))
        comment = form.get("comment") or None
        await cases.evaluate(key, cases.EvaluationIn(score=score, comment=comment), pool, settings)
    except ValueError as exc:  # a missing or non-numeric score, or the model's complaint
        detail = _first_error(exc) if isinstance(exc, ValidationError) else "score: 1–5"
        return _back_to_appointment(key, lang, detail)
    except ServiceMapError as exc:
        return _back_to_appointment(key, lang, str(exc.detail))
    return _back_to_appointment(key, lang)


@router.get("/appointments/{code}/qr.svg")
async def appointment_qr(
    code: Annotated[str, PathParam(max_length=64)], settings: SettingsDep
) -> Response:
    """The ticket page's QR code (shown at the window or scanned to open it on another phone)."""
    key = code_or_404(code)
    url = f"{settings.service.public_url}/appointments/{key}"
    return Response(svg(url, scale=6), media_type="image/svg+xml",
                    headers={"Cache-Control": "private, max-age=3600",
                             "Referrer-Policy": "no-referrer"})  # fmt: skip


# --- the staff window -------------------------------------------------------------------------


@router.get("/staff/halls/{hall_id}/windows/{window_id}", response_class=HTMLResponse)
async def window_page(
    hall_id: Annotated[str, PathParam(pattern=ID_PATTERN)],
    window_id: Annotated[str, PathParam(pattern=ID_PATTERN)],
    settings: SettingsDep,
    lang: LangDep,
) -> HTMLResponse:
    """The window's page: call next, call again, no-show, finish — all from the keyboard; the
    hall's evaluation figures per window, matter or hall, and its low-score alerts."""
    config = {
        "text": words("halls", lang),
        "next": f"/api/v1/staff/halls/{quote(hall_id)}/windows/{quote(window_id)}/next",
        "queue": f"/api/v1/staff/halls/{quote(hall_id)}/queue?window={quote(window_id)}",
        "tickets": "/api/v1/staff/tickets/",
        "figures": f"/api/v1/staff/halls/evaluations?hall={quote(hall_id)}",
        "lang": lang,
    }
    return _page("window.html", settings, lang, private=True, hall_id=hall_id,
                 window_id=window_id, config=orjson.dumps(config).decode())  # fmt: skip


# --- one page per matter and per document -------------------------------------------------


@router.get("/matters/{matter_id}", response_class=HTMLResponse)
async def matter_view(
    matter_id: PageId, pool: PoolDep, settings: SettingsDep, lang: LangDep
) -> HTMLResponse:
    """A matter: documents by the five stages, where and how to handle it, ratings, complaints."""
    if "\x00" in matter_id:
        return _missing(settings, lang)
    async with pool.connection() as conn:
        page = await matter_page(conn, matter_id, settings)
    if page is None:
        return _missing(settings, lang)
    return _page("matter.html", settings, lang, title=lambda row: _title(row, lang),
                 name=lambda row: _title(row, lang, "name"), domain_name=DOMAINS.get(
                     page["matter"]["domain"], {}).get(lang, page["matter"]["domain"]), **page)  # fmt: skip


@router.get("/documents/{document_id}", response_class=HTMLResponse)
async def document_view(
    document_id: PageId, pool: PoolDep, settings: SettingsDep, lang: LangDep
) -> HTMLResponse:
    """A document with its matters and the facilities linked to it."""
    if "\x00" in document_id:
        return _missing(settings, lang)
    async with pool.connection() as conn:
        page = await document_page(conn, document_id)
    if page is None:
        return _missing(settings, lang)
    return _page("document.html", settings, lang, title=lambda row: _title(row, lang),
                 name=lambda row: _title(row, lang, "name"),
                 layer_name=lambda key: layers.get_layer(key).name(lang), **page)  # fmt: skip


async def _exists(pool: PoolDep, table: str, key: str) -> None:
    query = {"matters": "SELECT 1 FROM matters WHERE id = %s",
             "documents": "SELECT 1 FROM documents WHERE id = %s"}[table]  # fmt: skip
    if "\x00" in key:
        raise NotFound(f"no {table[:-1]} with this id")
    async with pool.connection() as conn:
        if await (await conn.execute(query, (key,))).fetchone() is None:
            raise NotFound(f"no {table[:-1]} with id {key!r}")


def _qr(kind: str, key: str, settings: Settings, fmt: str, scale: int) -> Response:
    url = f"{settings.service.public_url}/{kind}/{quote(key)}"
    body = svg(url) if fmt == "svg" else png(url, scale=scale)
    return Response(
        body, media_type="image/svg+xml" if fmt == "svg" else "image/png",
        headers={"Cache-Control": "public, max-age=86400",
                 "Content-Disposition": f'inline; filename="{quote(key)}.{fmt}"'},
    )  # fmt: skip


Scale = Annotated[int, Query(ge=1, le=40, description="pixels per module")]


@router.get("/matters/{matter_id}/qr.svg")
async def matter_qr_svg(matter_id: PageId, pool: PoolDep, settings: SettingsDep) -> Response:
    """The matter page's QR code (SVG)."""
    await _exists(pool, "matters", matter_id)
    return _qr("matters", matter_id, settings, "svg", 10)


@router.get("/matters/{matter_id}/qr.png")
async def matter_qr_png(
    matter_id: PageId, pool: PoolDep, settings: SettingsDep, scale: Scale = 10
) -> Response:
    """The matter page's QR code (PNG)."""
    await _exists(pool, "matters", matter_id)
    return _qr("matters", matter_id, settings, "png", scale)


@router.get("/documents/{document_id}/qr.svg")
async def document_qr_svg(document_id: PageId, pool: PoolDep, settings: SettingsDep) -> Response:
    """The document page's QR code (SVG)."""
    await _exists(pool, "documents", document_id)
    return _qr("documents", document_id, settings, "svg", 10)


@router.get("/documents/{document_id}/qr.png")
async def document_qr_png(
    document_id: PageId, pool: PoolDep, settings: SettingsDep, scale: Scale = 10
) -> Response:
    """The document page's QR code (PNG)."""
    await _exists(pool, "documents", document_id)
    return _qr("documents", document_id, settings, "png", scale)
