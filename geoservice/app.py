"""The FastAPI application factory: ``create_app(settings)``; nothing is built at import time."""

from __future__ import annotations

import asyncio
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
from geoservice.residents import notify as residents_notify
from geoservice.residents import routes as residents
from geoservice.settings import Settings
from geoservice.toilets import ratings, sensors, staff
from web import downloads as web_downloads
from web import halls as web_halls
from web import me as web_me
from web import pages, staff_page
from web import routes as web_routes

logger = logging.getLogger("servicemap")


class BodyLimit:
    """Refuse request bodies larger than the limit with 413, before anything reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, counting its body bytes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, bounded_receive, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = f'{{"detail":"request body larger than {self.max_bytes} bytes"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


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
    register_error_handlers(app)
    # sensors first: routes are tried in order (each miss costs FastAPI's router ~7 µs), and
    # sensor posts are by far the most frequent requests; no two routers share a path
    for module in (sensors, meta, nearest, h3, facilities, disclosures, ratings, staff, ogc, tiles):
        app.include_router(module.router)
    app.include_router(downloads.router)
    app.include_router(halls.router)
    app.include_router(residents.router)
    for page in (pages, staff_page, web_routes, web_downloads, web_me):
        app.include_router(page.router)
    app.include_router(web_halls.router)
    # sensors never read back what they post: their writes skip the read-your-writes marker
    app.add_middleware(ReadRouting, exempt=("/api/v1/sensors/",))
    app.add_middleware(BodyLimit, max_bytes=settings.service.max_body_bytes)
    return app
