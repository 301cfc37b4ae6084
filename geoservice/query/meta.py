"""Liveness, readiness and the layer catalogue."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

import layers
from geoservice.api.deps import LangDep, PrimaryPoolDep

router = APIRouter(tags=["meta"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    """Liveness: answers while the process runs, whatever the database does."""
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable")
async def readyz(request: Request, pool: PrimaryPoolDep) -> JSONResponse:
    """Readiness: 200 when the primary answers, 503 while it is down; each standby's state."""
    # standbys as the last health check found them (geoservice.db.replicas)
    replicas = getattr(request.app.state, "replicas", None)
    standbys = replicas.report()["standbys"] if replicas is not None else []
    try:
        async with pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        primary = {"status": "down", "detail": type(exc).__name__}
        body = {"status": "unavailable", "detail": type(exc).__name__, "primary": primary}
        return JSONResponse({**body, "standbys": standbys}, 503)
    return JSONResponse({"status": "ok", "primary": {"status": "ok"}, "standbys": standbys})


def layer_document(layer: layers.Layer) -> dict[str, Any]:
    """A layer as the API describes it."""
    return {
        "key": layer.key,
        "names": dict(layer.names),
        "colour": layer.colour,
        "icon": layer.icon,
        "disclosure_domains": list(layer.disclosure_domains),
        "attributes": layer.attribute_schema(),
    }


@router.get("/api/v1/layers", summary="The facility layers with names and attribute schemas")
async def list_layers(request: Request, response: Response, lang: LangDep) -> Response:
    """Every layer: key, names in zh-Hans/zh-Hant/en, colour, icon, attribute JSON Schema."""
    body = {
        "layers": [
            {**layer_document(layer), "name": layer.name(lang)}
            for layer in layers.all_layers().values()
        ]
    }
    payload = json.dumps(body, ensure_ascii=False, sort_keys=True).encode()
    etag = '"' + hashlib.sha256(payload).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300", "Vary": "Accept-Language"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(payload, media_type="application/json", headers=headers)
