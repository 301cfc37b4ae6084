"""Domain errors and the one place that maps them to HTTP statuses."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
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
    document_errors(app)


#: the body of every error answer (422s name the parameter and what is allowed)
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "properties": {"detail": {"title": "Detail", "type": "string"}},
    "required": ["detail"],
}
#: dependencies that read credentials: their operations may answer 401 and 403
AUTH_DEPENDENCIES = frozenset(
    {"current_device", "cached_device", "current_staff", "current_resident"}
)
#: query parameters that carry credentials (a feed reader cannot send a bearer header)
AUTH_QUERY_PARAMETERS = frozenset({"token"})
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
#: a GeoJSON Feature or FeatureCollection, for routes that say no more
GEOJSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"type": "string", "enum": ["Feature", "FeatureCollection"]}},
}
_DESCRIPTIONS = {
    401: "missing, invalid or revoked bearer token",
    403: "a token that does not allow this",
    404: "no such resource",
    413: "request body larger than allowed",
    422: "a parameter or body field outside what is allowed (detail names it)",
    431: "request headers larger than allowed",
    503: "the database is unreachable; retry after the given seconds",
}


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI keeps included routers whole
            yield from _api_routes(route.original_router.routes)
        elif hasattr(route, "routes"):
            yield from _api_routes(route.routes)


def _calls(dependant: Any) -> Iterator[str]:
    for sub in dependant.dependencies:
        yield getattr(sub.call, "__name__", "")
        yield from _calls(sub)


def _parameters(dependant: Any, kinds: tuple[str, ...]) -> bool:
    if any(getattr(dependant, kind) for kind in kinds):
        return True
    return any(_parameters(sub, kinds) for sub in dependant.dependencies)


def _error_statuses(route: APIRoute, method: str) -> list[int]:
    statuses = [431, 503]
    kinds = ("path_params", "query_params", "header_params", "cookie_params", "body_params")
    if _parameters(route.dependant, kinds):
        statuses.append(422)
    if _parameters(route.dependant, ("path_params", "query_params", "body_params")):
        statuses.append(404)  # an id in the path, the query or the body that names nothing
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        statuses.append(413)
    credentials = {p.alias for p in route.dependant.query_params} & AUTH_QUERY_PARAMETERS
    if credentials or AUTH_DEPENDENCIES & set(_calls(route.dependant)):
        statuses += [401, 403]
    return sorted(statuses)


def document_errors(app: FastAPI) -> None:
    """Make /openapi.json describe the error answers the service gives: ``{"detail": "…"}``.

    FastAPI documents 422 as its own array of objects; ours is a sentence. 404, 401/403, 413,
    431 and 503 come from dependencies, middleware and the handlers above, which FastAPI
    cannot see: they are added here to every operation that can give them.
    """
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Error"] = ERROR_SCHEMA
        paths = document.get("paths", {})
        for route in _api_routes(list(app.routes)):
            if not route.include_in_schema or route.path not in paths:
                continue
            for method in route.methods or ():
                operation = paths[route.path].get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                for status in _error_statuses(route, method):
                    entry = responses.setdefault(
                        str(status), {"description": _DESCRIPTIONS[status]}
                    )
                    entry["content"] = {"application/json": {"schema": _ERROR_REF}}
                for key, entry in responses.items():
                    geojson = entry.get("content", {}).get("application/geo+json")
                    if geojson is not None and geojson.get("schema") == {"type": "string"}:
                        # a GeoJSONResponse route that documents nothing: an object, not text
                        geojson["schema"] = GEOJSON_SCHEMA
                    if key.startswith(("4", "5")):
                        content = entry.setdefault("content", {})
                        media = content.setdefault("application/json", {})
                        if not media.get("schema") or "ValidationError" in str(media["schema"]):
                            media["schema"] = _ERROR_REF
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
