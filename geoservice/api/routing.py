"""Which database a request uses: reads on standbys, writes and a writer's next reads on the primary.

With ``SERVICEMAP_DATABASE_READ_URLS`` set, the app keeps a
:class:`geoservice.db.replicas.ReadRouter` on ``app.state.replicas``:

- ``PoolDep`` (``geoservice.api.deps``) gives a GET or HEAD a usable standby's pool and any
  other request the primary's; routes that write inside a GET ask for ``PrimaryPoolDep``.
- After a successful write (any other method), :class:`ReadRouting` adds the primary's WAL
  position to the response, as the ``Servicemap-LSN`` header and an HttpOnly
  ``servicemap_lsn`` cookie. A read carrying either goes only to a standby that has replayed
  that far, else to the primary: a client always reads its own writes. Paths whose clients
  never read back (sensor posts) are exempt and skip that round trip.
- A read that failed on a standby (503, or a database error escaping the handlers) takes the
  standby out and is run again, once, on the primary: a standby that dies costs no answer.
Without standbys the middleware passes every request straight through.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import psycopg
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from geoservice.db.replicas import ReadRouter, Standby, parse_lsn

#: the read-your-writes marker: a cookie for browsers, a header for API clients
COOKIE = "servicemap_lsn"
HEADER = "servicemap-lsn"
#: methods that never write: their requests may read from a standby
READ_METHODS = frozenset({"GET", "HEAD"})
logger = logging.getLogger("servicemap")

#: keys of the request's scope state
STANDBY = "servicemap.standby"
PRIMARY_ONLY = "servicemap.primary_only"


def read_router(scope: Scope) -> ReadRouter | None:
    """The app's read router, or None when no standbys are configured."""
    router: ReadRouter | None = getattr(scope["app"].state, "replicas", None)
    return router


def read_after(request: Request) -> int | None:
    """The WAL position this client must read at or after (its last write), if it sent one."""
    value = request.headers.get(HEADER) or request.cookies.get(COOKIE)
    if not value:
        return None
    try:
        return parse_lsn(value)
    except ValueError:
        return None


def standby_for(request: Request) -> Standby | None:
    """The standby this read goes to, or None for the primary (noted for a retry)."""
    router = read_router(request.scope)
    if router is None or request.method not in READ_METHODS:
        return None
    state = request.scope.setdefault("state", {})
    if state.get(PRIMARY_ONLY):
        return None
    standby = router.choose(read_after(request))
    if standby is not None:
        state[STANDBY] = standby
    return standby


class ReadRouting:
    """Marks responses to writes with the primary's WAL position; retries failed standby reads."""

    def __init__(self, app: ASGIApp, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        #: path prefixes whose writes need no marker (their clients never read them back)
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one request (plain pass-through without standbys)."""
        router = read_router(scope) if scope["type"] == "http" else None
        if router is None:
            await self.app(scope, receive, send)
        elif scope["method"] in READ_METHODS:
            await self._read(router, scope, receive, send)
        elif scope["method"] == "OPTIONS" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
        else:
            await self._write(router, scope, receive, send)

    async def _read(self, router: ReadRouter, scope: Scope, receive: Receive, send: Send) -> None:
        state: dict[str, Any] = scope.setdefault("state", {})
        received: list[Message] = []
        held: Message | None = None
        started = False

        async def recording_receive() -> Message:
            message = await receive()
            received.append(message)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal held, started
            if held is not None:
                return  # the failed answer's body: it is answered again from the primary
            if message["type"] == "http.response.start":
                if message["status"] == 503 and STANDBY in state:
                    held = message
                    return
                started = True
            await send(message)

        try:
            await self.app(scope, recording_receive, guarded_send)
        except psycopg.Error as exc:
            # a database error the handlers did not turn into an answer (a recovery conflict)
            if STANDBY not in state or held is not None or started:
                raise
            held = {"type": "http.response.start", "status": 500, "exception": exc}
        if held is None:
            return
        standby: Standby = state[STANDBY]
        failure = held.get("exception")
        if isinstance(failure, psycopg.errors.ReadOnlySqlTransaction):
            # the standby is fine: the route writes in a GET and must ask for PrimaryPoolDep
            logger.error("%s %s writes: it must use the primary", scope["method"], scope["path"])
        else:
            reason = type(failure).__name__ if failure else f"status {held['status']}"
            router.suspect(standby, f"a read failed: {reason}")
        replay = list(received)

        async def replayed_receive() -> Message:
            return replay.pop(0) if replay else await receive()

        retry_state = {k: v for k, v in state.items() if k != STANDBY}
        retry_state[PRIMARY_ONLY] = True
        await self.app({**scope, "state": retry_state}, replayed_receive, send)

    async def _write(self, router: ReadRouter, scope: Scope, receive: Receive, send: Send) -> None:
        max_age = str(max(60, math.ceil(4 * router.max_lag_s))).encode()

        async def marking_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                try:
                    lsn = (await router.primary_lsn()).encode()
                except (psycopg.Error, OSError, TimeoutError):
                    lsn = b""  # the primary is gone: the write's own answer says more
                if lsn:
                    cookie = b"%s=%s; Max-Age=%s; Path=/; HttpOnly; SameSite=Lax" % (
                        COOKIE.encode(),
                        lsn,
                        max_age,
                    )
                    headers = [*message.get("headers", ()), (HEADER.encode(), lsn)]
                    headers.append((b"set-cookie", cookie))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, marking_send)
