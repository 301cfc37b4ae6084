"""A hall's set-up as data (``servicemap halls load PATH``) and the upkeep of cases.

Loading validates the whole file first (every facility a live service hall, every matter in the
catalogue, window ids unique, hours parseable) and writes nothing when anything is wrong; then,
in one transaction, each hall's windows and matters are replaced. Slots, cases and tickets are
kept: a future slot's capacity follows the new set-up but never drops below what is booked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from geoservice.halls.domain import CONTROL, hours_parse, queue_groups

Conn = psycopg.Connection[Any]

Id = Annotated[str, Field(min_length=1, max_length=200)]
Capacity = Annotated[int, Field(ge=1, le=1000)]


class HallsError(Exception):
    """A set-up file that cannot be loaded; the message names each problem."""


class WindowIn(BaseModel):
    """A window and the matters it serves."""

    model_config = ConfigDict(extra="forbid")

    id: Id
    name: Annotated[str, Field(min_length=1, max_length=100)]
    matters: Annotated[list[Id], Field(min_length=1, max_length=500)]

    @field_validator("id", "name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if CONTROL.search(value):
            raise ValueError("must not contain control characters")
        return value


class HallIn(BaseModel):
    """One hall's set-up."""

    model_config = ConfigDict(extra="forbid")

    facility: Id
    windows: Annotated[list[WindowIn], Field(min_length=1, max_length=500)]
    slot_minutes: Annotated[int, Field(ge=5, le=240)] = 30
    booking_days_ahead: Annotated[int, Field(ge=0, le=90)] = 7
    hours: Annotated[str | None, Field(max_length=1000)] = None
    #: bookings per slot: one number for every matter, or per matter id
    capacity: Capacity | dict[Id, Capacity] | None = None

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str | None) -> str | None:
        if value is not None and not hours_parse(value):
            raise ValueError(f"{value!r} is not OSM opening_hours syntax")
        return value

    @field_validator("windows")
    @classmethod
    def _unique_windows(cls, windows: list[WindowIn]) -> list[WindowIn]:
        ids = [w.id for w in windows]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"window ids must be unique; repeated: {', '.join(twice)}")
        queue_groups([(w.id, w.matters) for w in windows])
        return windows

    def matters(self) -> list[str]:
        """Every matter the hall handles, in window order."""
        return list(dict.fromkeys(m for w in self.windows for m in w.matters))

    def capacity_of(self, matter: str) -> int:
        """Bookings per slot: as set, else the number of windows serving the matter."""
        if isinstance(self.capacity, int):
            return self.capacity
        if isinstance(self.capacity, dict) and matter in self.capacity:
            return self.capacity[matter]
        return sum(matter in w.matters for w in self.windows)


class HallsFile(BaseModel):
    """``{"halls": [...]}`` (a bare list is accepted too)."""

    model_config = ConfigDict(extra="forbid")

    halls: Annotated[list[HallIn], Field(max_length=10_000)]


def read_halls(path: Path) -> HallsFile:
    """Parse and validate a set-up file, or HallsError naming every problem."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HallsError(f"{path}: cannot read JSON ({exc})") from exc
    if isinstance(data, list):
        data = {"halls": data}
    try:
        return HallsFile.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        ]
        raise HallsError(f"{path}: " + "; ".join(problems[:20])) from exc


_FACILITIES = """
SELECT id, layer, status, opening_hours FROM facilities WHERE id = ANY(%s)
"""
_MATTERS = "SELECT id FROM matters WHERE id = ANY(%s)"
_UPSERT_HALL = """
INSERT INTO halls (facility_id, slot_minutes, booking_days_ahead, hours)
VALUES (%s, %s, %s, %s)
ON CONFLICT (facility_id) DO UPDATE
   SET slot_minutes = EXCLUDED.slot_minutes, booking_days_ahead = EXCLUDED.booking_days_ahead,
       hours = EXCLUDED.hours, updated_at = now()
"""
_CLEAR = (
    "DELETE FROM hall_window_matters WHERE hall_id = %s",
    "DELETE FROM hall_windows WHERE hall_id = %s",
    "DELETE FROM hall_matters WHERE hall_id = %s",
)
_INSERT_WINDOW = "INSERT INTO hall_windows (hall_id, id, name, position) VALUES (%s, %s, %s, %s)"
_INSERT_WINDOW_MATTER = (
    "INSERT INTO hall_window_matters (hall_id, window_id, matter_id) VALUES (%s, %s, %s)"
)
_INSERT_MATTER = (
    "INSERT INTO hall_matters (hall_id, matter_id, capacity, queue_group) VALUES (%s, %s, %s, %s)"
)
# future slots follow the new capacity, never below what is already booked
_RESIZE_SLOTS = """
UPDATE hall_slots s SET capacity = greatest(m.capacity, s.booked)
  FROM hall_matters m
 WHERE s.hall_id = %s AND m.hall_id = s.hall_id AND m.matter_id = s.matter_id
   AND s.starts_at > now() AND s.capacity <> greatest(m.capacity, s.booked)
"""


def load_halls(conn: Conn, setup: HallsFile) -> list[dict[str, Any]]:
    """Replace the set-up of every hall in the file (one transaction); a summary row per hall."""
    ids = [h.facility for h in setup.halls]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    problems = [f"facility {i!r} appears more than once" for i in twice]
    with conn.transaction():
        facilities = {r["id"]: r for r in conn.execute(_FACILITIES, (ids,)).fetchall()}
        wanted = sorted({m for h in setup.halls for m in h.matters()})
        known = {r["id"] for r in conn.execute(_MATTERS, (wanted,)).fetchall()}
        for n, hall in enumerate(setup.halls):
            row = facilities.get(hall.facility)
            if row is None:
                problems.append(f"halls.{n}.facility: no facility {hall.facility!r}")
                continue
            if row["layer"] != "service_hall":
                problems.append(
                    f"halls.{n}.facility: {hall.facility!r} is a {row['layer']}, not a hall"
                )
            if row["status"] == "removed":
                problems.append(f"halls.{n}.facility: {hall.facility!r} has been removed")
            if hall.hours is None and not (
                row["opening_hours"] and hours_parse(row["opening_hours"])
            ):
                problems.append(f"halls.{n}.hours: required (the facility has no usable hours)")
            unknown = [m for m in hall.matters() if m not in known]
            if unknown:
                problems.append(
                    f"halls.{n}: matters not in the catalogue: {', '.join(unknown[:10])}"
                    " (load it first: servicemap ingest-disclosures)"
                )
            if isinstance(hall.capacity, dict):
                extra = sorted(set(hall.capacity) - set(hall.matters()))
                if extra:
                    problems.append(
                        f"halls.{n}.capacity: matters no window serves: {', '.join(extra)}"
                    )
        if problems:
            raise HallsError("; ".join(problems[:20]))
        rows = []
        for hall in setup.halls:
            _load_one(conn, hall)
            rows.append(
                {"hall": hall.facility, "windows": len(hall.windows),
                 "matters": len(hall.matters()), "slot_minutes": hall.slot_minutes}
            )  # fmt: skip
    return rows


def _load_one(conn: Conn, hall: HallIn) -> None:
    hall_id = hall.facility
    conn.execute(_UPSERT_HALL, (hall_id, hall.slot_minutes, hall.booking_days_ahead, hall.hours))
    for statement in _CLEAR:
        conn.execute(statement, (hall_id,))
    groups = queue_groups([(w.id, w.matters) for w in hall.windows])
    with conn.cursor() as cur:
        cur.executemany(
            _INSERT_WINDOW, [(hall_id, w.id, w.name, i) for i, w in enumerate(hall.windows)]
        )
        cur.executemany(
            _INSERT_WINDOW_MATTER,
            [(hall_id, w.id, m) for w in hall.windows for m in dict.fromkeys(w.matters)],
        )
        cur.executemany(
            _INSERT_MATTER,
            [(hall_id, m, hall.capacity_of(m), groups[m]) for m in hall.matters()],
        )
    conn.execute(_RESIZE_SLOTS, (hall_id,))


# --- upkeep: lapsing bookings, erasing personal data ------------------------------------------

#: bookings not checked in `lapse` minutes after their start lapse (run before reads that care)
LAPSE = """
WITH lapsed AS (
    UPDATE hall_cases SET status = 'lapsed', updated_at = now(), ended_at = now()
     WHERE status = 'booked' AND starts_at < now() - make_interval(mins => %(lapse)s)
    RETURNING id
)
INSERT INTO hall_case_events (case_id, status) SELECT id, 'lapsed' FROM lapsed
"""

#: names, phones and address hashes of cases ended more than `days` days ago
ERASE = """
UPDATE hall_cases SET name = NULL, phone = NULL, client_hash = NULL, erased_at = now()
 WHERE erased_at IS NULL AND ended_at < now() - make_interval(days => %(days)s)
"""


def upkeep(conn: Conn, *, lapse_after_min: int, retention_days: int) -> dict[str, int]:
    """Lapse overdue bookings and erase expired personal data; the rows touched."""
    with conn.transaction():
        lapsed = conn.execute(LAPSE, {"lapse": lapse_after_min}).rowcount
        erased = conn.execute(ERASE, {"days": retention_days}).rowcount
    return {"lapsed": max(0, lapsed), "erased": max(0, erased)}
