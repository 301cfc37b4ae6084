"""Domain errors and the one place that maps them to HTTP statuses."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("servicemap")


class ServiceMapError(Exception):
    """Base of the errors routers raise; `detail` is what the client reads."""

    status_code = 500

    def __init__(self, detail: Any, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class InvalidParameter(ServiceMapError):
    """A parameter or body field is outside what is allowed."""

    status_code = 422


class NotFound(ServiceMapError):
    """No such resource."""

    status_code = 404


class Unauthorized(ServiceMapError):
    """No valid credentials."""

    status_code = 401

    def __init__(self, detail: Any = "a valid bearer token is required") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceMapError):
    """Valid credentials that do not allow this."""

    status_code = 403


class Conflict(ServiceMapError):
    """The request conflicts with stored state."""

    status_code = 409


class PayloadTooLarge(ServiceMapError):
    """The body or batch is larger than allowed."""

    status_code = 413


class TooManyRequests(ServiceMapError):
    """A rate limit was hit; retry after the given seconds."""

    status_code = 429

    def __init__(self, detail: Any, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class ServiceUnavailable(ServiceMapError):
    """The database (or another dependency) is not reachable right now."""

    status_code = 503


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    where = {"query": "query parameter", "path": "path parameter", "body": "body field"}
    if parts and parts[0] in where:
        name = ".".join(parts[1:]) or "body"
        return f"{where[parts[0]]} '{name}'"
    return ".".join(parts)


def validation_detail(exc: RequestValidationError) -> str:
    """One sentence naming each bad parameter and what is allowed."""
    messages = []
    for error in exc.errors():
        msg = error.get("msg", "invalid")
        if error.get("type") == "missing":
            msg = "is required"
        messages.append(f"{_field(error.get('loc', ()))}: {msg}")
    return "; ".join(messages) or "invalid request"


NUL_DETAIL = "text parameters and fields must not contain NUL (U+0000) characters"


def is_nul_error(exc: BaseException) -> bool:
    """Whether a database error is PostgreSQL refusing a NUL character in text or JSON."""
    if isinstance(exc, psycopg.errors.UntranslatableCharacter):
        return True
    return isinstance(exc, psycopg.DataError) and exc.sqlstate is None and "NUL" in str(exc)


def register_error_handlers(app: FastAPI) -> None:
    """Register the exception → response mapping once."""

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceMapError)
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    async def request_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": validation_detail(exc)}, 422)

    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "the database is unavailable; try again shortly"},
            503,
            headers={"Retry-After": "5"},
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, 500)

    async def data_error(request: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL text cannot hold NUL: psycopg refuses it before sending (no sqlstate),
        # the server refuses \u0000 in JSON; either is the client's text, never our fault
        if is_nul_error(exc):
            return JSONResponse({"detail": NUL_DETAIL}, 422)
        return await unexpected(request, exc)

    app.add_exception_handler(ServiceMapError, domain_error)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(PoolTimeout, database_down)
    app.add_exception_handler(psycopg.OperationalError, database_down)
    app.add_exception_handler(psycopg.DataError, data_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
