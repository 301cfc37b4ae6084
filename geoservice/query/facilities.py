"""One facility by id: everything a client or the facility page needs, disclosures included."""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Path, Response
from psycopg import sql

from geoservice.api.deps import PoolDep, SettingsDep
from geoservice.api.errors import NotFound
from geoservice.api.features import FEATURE_COLUMNS, GeoJSONResponse, json_response, to_feature
from geoservice.disclosures.routes import facility_disclosures
from geoservice.settings import Settings
from geoservice.toilets.live import attach

router = APIRouter(tags=["facilities"])

#: longest id accepted in a path; ids are derived from (source, source_id) and short
MAX_ID_LENGTH = 200

_BY_ID = sql.SQL("SELECT {columns} FROM facilities f WHERE f.id = %s").format(
    columns=sql.SQL(FEATURE_COLUMNS)
)


async def get_facility(
    conn: psycopg.AsyncConnection[dict[str, Any]], facility_id: str, settings: Settings
) -> dict[str, Any] | None:
    """The facility as a GeoJSON Feature with live, rating and disclosures; None when unknown.

    Removed facilities are still returned by id (with status "removed"): a printed QR code
    must keep answering after the facility closes.
    """
    # PostgreSQL text cannot hold NUL: such an id names no facility
    if len(facility_id) > MAX_ID_LENGTH or "\x00" in facility_id:
        return None
    cursor = await conn.execute(_BY_ID, (facility_id,), prepare=True)
    row = await cursor.fetchone()
    if row is None:
        return None
    await attach(conn, [row], settings)
    row["disclosures"] = await facility_disclosures(conn, facility_id)
    return to_feature(row, timezone=settings.district.timezone)


@router.get(
    "/api/v1/facilities/{facility_id}",
    summary="One facility with live status, rating and disclosures by the five stages",
    response_class=GeoJSONResponse,
    responses={404: {"description": "no facility has this id"}},
)
async def facility(
    facility_id: Annotated[str, Path(max_length=MAX_ID_LENGTH)],
    pool: PoolDep,
    settings: SettingsDep,
) -> Response:
    """GeoJSON Feature of a facility; 404 naming the id when unknown."""
    async with pool.connection() as conn:
        feature = await get_facility(conn, facility_id, settings)
    if feature is None:
        raise NotFound(f"no facility with id {facility_id!r}")
    return json_response(feature, media_type="application/geo+json")
