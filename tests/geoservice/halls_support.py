"""What the hall tests share: a database with the sample district and its halls loaded.

The sample's halls keep their weekday hours, except one street hall (``OPEN_HALL``) that is open
24/7 with 15-minute slots and 3 places per slot, so walk-ins, check-ins and bookings for the
next slot work whenever the tests run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from geoservice.db.connection import connect
from geoservice.halls.domain import slot_grid
from geoservice.toilets.admin import add_staff
from ingest.halls_sample import SPECIALISED_SOURCE, halls_setup, write_halls
from ingest.load import facility_id
from ingest.pipeline import ingest_file

ZONE = "Asia/Shanghai"
OPEN_HALL = facility_id("sample", "LH-SERVICE_HALL-00002")
DISTRICT_HALL = facility_id("sample", "LH-SERVICE_HALL-00001")
#: handled by every window of the open hall's first group
MATTER = "M-HHR-002"
OTHER_MATTER = "M-SIN-001"
CAPACITY = 3


def setup_for_tests() -> list[dict[str, Any]]:
    """The sample set-up with OPEN_HALL open around the clock."""
    halls = halls_setup()
    for hall in halls:
        if hall["facility"] == OPEN_HALL:
            hall.update(hours="24/7", slot_minutes=15, booking_days_ahead=7, capacity=CAPACITY)
    return halls


def servicemap(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI against `url`."""
    return subprocess.run(
        [sys.executable, "-m", "geoservice.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": url, "COLUMNS": "200"},
        timeout=300,
    )


def load_halls_db(url: str, sample_dir: Path, tmp: Path) -> str:
    """Load the specialised halls and the test set-up (through the CLI); a staff token."""
    write_halls(sample_dir)
    with connect(url) as conn:
        ingest_file(
            conn,
            sample_dir / "halls_facilities.json",
            layer="service_hall",
            source=SPECIALISED_SOURCE,
        )
    path = tmp / "halls.json"
    path.write_text(json.dumps({"halls": setup_for_tests()}, ensure_ascii=False))
    result = servicemap("halls", "load", str(path), url=url)
    assert result.returncode == 0, result.stderr
    with connect(url, autocommit=True) as conn:
        return add_staff(conn, "窗口工作人员")


def next_slot(minutes_ahead: int = 0) -> datetime:
    """The first 15-minute slot of OPEN_HALL starting after now + minutes_ahead."""
    zone = ZoneInfo(ZONE)
    at = datetime.now(zone) + timedelta(minutes=minutes_ahead)
    for day in (at.date(), at.date() + timedelta(days=1)):
        for slot in slot_grid("24/7", 15, day, ZONE):
            if slot.start > at:
                return slot.start
    raise AssertionError("no slot")


def future_weekday_slot(days: int = 2) -> datetime:
    """A 10:00 slot start on a weekday `days` or more ahead (district and street halls open)."""
    zone = ZoneInfo(ZONE)
    day = datetime.now(zone).date() + timedelta(days=days)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, 10, 0, tzinfo=zone)
