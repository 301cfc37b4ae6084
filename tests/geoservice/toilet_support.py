"""Helpers shared by the smart-toilet tests: a few facilities, devices, readings, clients."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import h3

from geoservice.db.connection import connect
from geoservice.settings import Settings, ToiletSettings
from tests.conftest import settings_for

#: (id, layer, name, lon, lat) of the facilities the toilet tests use
FACILITIES = [
    ("toilet-a", "toilet", "东门公厕", 114.1200, 22.5480),
    ("toilet-b", "toilet", "桂园公厕", 114.1100, 22.5450),
    ("toilet-c", "toilet", "黄贝公厕", 114.1400, 22.5500),
    ("toilet-d", "toilet", "翠竹公厕", 114.1300, 22.5600),
    ("clinic-a", "clinic", "东门社康中心", 114.1210, 22.5485),
]


def add_facilities(url: str) -> None:
    """Insert the test facilities (idempotent)."""
    with connect(url, autocommit=True) as conn:
        for fid, layer, name, lon, lat in FACILITIES:
            conn.execute(
                "INSERT INTO facilities (id, layer, name, source, source_id, geom, h3_15,"
                " content_hash) VALUES (%s, %s, %s, 'test', %s,"
                " ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s, 'x') ON CONFLICT DO NOTHING",
                (fid, layer, name, fid, lon, lat, h3.str_to_int(h3.latlng_to_cell(lat, lon, 15))),
            )


def toilet_settings(url: str, **toilets: Any) -> Settings:
    """Settings for `url` with smart-toilet overrides."""
    settings = settings_for(url)
    if toilets:
        settings.toilets = ToiletSettings(**{**settings.toilets.model_dump(), **toilets})
    return settings


def reading(
    seq: int,
    at: datetime | None = None,
    *,
    occupied: tuple[bool, ...] = (False, True),
    **extra: Any,
) -> dict[str, Any]:
    """One reading as a sensor posts it (stalls '1', '2', ...)."""
    at = at or datetime.now(UTC) - timedelta(seconds=60)
    return {
        "seq": seq,
        "observed_at": at.isoformat(),
        "stalls": [{"id": str(i + 1), "occupied": o} for i, o in enumerate(occupied)],
        **extra,
    }


def auth(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


def stored(url: str, device_id: int) -> list[int]:
    """The seqs stored for a device, sorted."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT seq FROM toilet_readings WHERE device_id = %s ORDER BY seq", (device_id,)
        ).fetchall()
    return [int(r["seq"]) for r in rows]
