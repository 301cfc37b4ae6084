"""The FastAPI application factory: ``create_app(settings)``; nothing is built at import time."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from geoservice.api.errors import register_error_handlers
from geoservice.api.routing import ReadRouting
from geoservice.db.connection import create_pool, database_url, mask_url
from geoservice.db.replicas import ReadRouter
from geoservice.disclosures import routes as disclosures
from geoservice.halls import routes as halls
from geoservice.query import downloads, facilities, h3, meta, nearest, ogc, tiles
from geoservice.residents import linking as residents_linking
from geoservice.residents import notify as residents_notify
from geoservice.residents import routes as residents
from geoservice.settings import Settings
from geoservice.toilets import ratings, sensors, staff
from web import downloads as web_downloads
from web import halls as web_halls
from web import me as web_me
from web import pages, staff_page
from web import routes as web_routes
from web.csp import InlineScriptHashes

logger = logging.getLogger("servicemap")


#: the most bytes of request headers (names + values) a request may carry; browsers send a
#: few kB, and uvicorn's h11 parser draws its own line at 16 kB
MAX_HEADER_BYTES = 16_384
#: the most header fields a request may carry
MAX_HEADER_FIELDS = 100


class BodyLimit:
    """Refuse request bodies larger than the limit with 413, before anything reads them,
    and requests with more header bytes or fields than MAX_HEADER_BYTES/FIELDS with 431.

    A declared Content-Length is checked at once. A body of unknown length (chunked) is read
    here first, up to the limit, and handed on whole: every route answers 413, also one that
    reads its body through a parser that would turn a failed read into a 400.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on once its body is known to be within the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_headers = scope.get("headers", [])
        size = sum(len(name) + len(value) for name, value in raw_headers)
        if size > MAX_HEADER_BYTES or len(raw_headers) > MAX_HEADER_FIELDS:
            await _answer(
                send,
                431,
                f"request headers larger than {MAX_HEADER_BYTES} bytes"
                f" or more than {MAX_HEADER_FIELDS} fields",
            )
            return
        headers = dict(raw_headers)
        declared = headers.get(b"content-length")
        if declared is not None:
            # the server holds the client to the length it declared
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: the app sees it too
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        await _answer(send, 413, f"request body larger than {self.max_bytes} bytes")


async def _answer(send: Send, status: int, detail: str) -> None:
    """A JSON error sent straight from the middleware; the connection is closed after it."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # the rest of the request is not read: the connection cannot be reused
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings) -> FastAPI:
    """Build the service for these settings; the lifespan owns the database pool."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = database_url(settings.db)
        pool = create_pool(url, settings.db)
        await pool.open(wait=False)
        try:
            await pool.wait(timeout=10)
        except Exception:  # noqa: BLE001 - keep serving; /readyz reports the outage
            logger.warning("database %s not reachable yet; /readyz answers 503", mask_url(url))
        app.state.pool = pool
        # reads on streaming standbys (geoservice.db.replicas); none configured: all on `pool`
        replicas = None
        if settings.db.read_urls:
            replicas = ReadRouter(pool, url, list(settings.db.read_urls), settings.db)
            await replicas.open()
        app.state.replicas = replicas
        # serve's periodic mode of `servicemap notify` (residents' digests), when configured
        every = settings.residents.notify_every_s
        notifier = (
            asyncio.create_task(residents_notify.periodic(url, settings, every)) if every else None
        )
        try:
            yield
        finally:
            if notifier is not None:
                notifier.cancel()
            if replicas is not None:
                await replicas.close()
            await pool.close()

    app = FastAPI(
        title="servicemap",
        summary=f"Convenience services of {settings.district.name_en} on one map and one API",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # the halls keep a signed-in resident's bookings and tickets as theirs (geoservice.halls
    # cannot import geoservice.residents: the app hands the session check over)
    app.state.resident_of = residents_linking.resident_id_of
    register_error_handlers(app)
    # sensors first, then residents: routes are tried in order (each miss costs FastAPI's router
    # ~7 µs), sensor posts are by far the most frequent requests and residents' feeds poll; no
    # two routers share a path
    app.include_router(sensors.router)
    app.include_router(residents.router)
    for module in (meta, nearest, h3, facilities, disclosures, ratings, staff, ogc, tiles):
        app.include_router(module.router)
    app.include_router(downloads.router)
    app.include_router(halls.router)
    for page in (pages, staff_page, web_routes, web_downloads, web_me):
        app.include_router(page.router)
    app.include_router(web_halls.router)
    # sensors never read back what they post: their writes skip the read-your-writes marker
    app.add_middleware(ReadRouting, exempt=("/api/v1/sensors/",))
    # pages' inline scripts allowed by hash in their Content-Security-Policy
    app.add_middleware(InlineScriptHashes)
    app.add_middleware(BodyLimit, max_bytes=settings.service.max_body_bytes)
    return app
