"""Smart-toilet administration: sensor devices and staff with their tokens, reading retention.

The functions take a sync connection (dict rows); the CLI, the simulator, tests and benchmarks
call them directly.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from geoservice.api.auth import DEVICE_PREFIX, STAFF_PREFIX, new_token, token_hash
from geoservice.settings import ToiletSettings
from layers import LIVE_STATUS, has_capability

Conn = psycopg.Connection[dict[str, Any]]

#: most stalls registered at once by `devices add --stalls`
MAX_STALLS = 64
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 86400, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PARTITION = re.compile(r"^toilet_readings_y(\d{4})m(\d{2})$")


class ToiletAdminError(ValueError):
    """A toilet administration request that cannot be done; the message says why."""


def parse_duration(text: str) -> timedelta:
    """'400d', '12h', '90m', '30s', '2w' (a bare number is days) as a timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise ToiletAdminError(f"{text!r} is not a duration like 400d, 12h, 90m or 2w")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def refresh_status(conn: Conn, facility_id: str) -> None:
    """Recount a toilet's stalls from its live (not revoked) devices."""
    conn.execute(
        "INSERT INTO toilet_status (facility_id) VALUES (%s) ON CONFLICT DO NOTHING",
        (facility_id,),
    )
    conn.execute(
        "UPDATE toilet_status s SET stalls_total = a.total, stalls_free = a.free"
        " FROM (SELECT count(*) AS total, count(*) FILTER (WHERE ts.occupied IS FALSE) AS free"
        "       FROM toilet_stalls ts JOIN toilet_devices d ON d.id = ts.device_id"
        "       WHERE ts.facility_id = %s AND d.revoked_at IS NULL) a"
        " WHERE s.facility_id = %s",
        (facility_id, facility_id),
    )


def add_device(conn: Conn, facility_id: str, stalls: int = 0) -> tuple[int, str]:
    """Register a sensor for a toilet with stalls '1'..'N'; return (device id, token)."""
    if not 0 <= stalls <= MAX_STALLS:
        raise ToiletAdminError(f"--stalls must be between 0 and {MAX_STALLS}")
    with conn.transaction():
        facility = conn.execute(
            "SELECT layer, status FROM facilities WHERE id = %s", (facility_id,)
        ).fetchone()
        if facility is None:
            raise ToiletAdminError(f"no facility with id {facility_id!r}")
        if not has_capability(facility["layer"], LIVE_STATUS):
            raise ToiletAdminError(
                f"facility {facility_id!r} is a {facility['layer']}, not a toilet"
            )
        token = new_token(DEVICE_PREFIX)
        row = conn.execute(
            "INSERT INTO toilet_devices (facility_id, token_hash, stalls) VALUES (%s, %s, %s)"
            " RETURNING id",
            (facility_id, token_hash(token), stalls),
        ).fetchone()
        assert row is not None
        device_id = int(row["id"])
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO toilet_stalls (device_id, stall_id, facility_id) VALUES (%s, %s, %s)",
                [(device_id, str(i), facility_id) for i in range(1, stalls + 1)],
            )
        refresh_status(conn, facility_id)
    return device_id, token


def list_devices(conn: Conn) -> list[dict[str, Any]]:
    """Every device with its toilet, stall count, last reading time and revocation."""
    return conn.execute(
        "SELECT d.id, d.facility_id, f.name AS toilet,"
        " (SELECT count(*) FROM toilet_stalls s WHERE s.device_id = d.id) AS stalls,"
        " d.created_at, d.revoked_at, st.last_seen"
        " FROM toilet_devices d JOIN facilities f ON f.id = d.facility_id"
        " LEFT JOIN toilet_status st ON st.facility_id = d.facility_id"
        " ORDER BY d.id"
    ).fetchall()


def revoke_device(conn: Conn, device_id: int) -> None:
    """Revoke a device's token: it can post nothing more; its stalls leave the live counts."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE toilet_devices SET revoked_at = coalesce(revoked_at, now())"
            " WHERE id = %s RETURNING facility_id",
            (device_id,),
        ).fetchone()
        if row is None:
            raise ToiletAdminError(f"no device with id {device_id}")
        refresh_status(conn, str(row["facility_id"]))


def add_staff(conn: Conn, name: str) -> str:
    """Give a member of staff a token (a revoked name gets a new one); return the token."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ToiletAdminError("--name must be 1 to 100 characters")
    token = new_token(STAFF_PREFIX)
    with conn.transaction():
        existing = conn.execute(
            "SELECT revoked_at FROM staff_members WHERE name = %s FOR UPDATE", (name,)
        ).fetchone()
        if existing is not None and existing["revoked_at"] is None:
            raise ToiletAdminError(
                f"staff {name!r} already has a live token; `servicemap staff revoke` it first"
            )
        conn.execute(
            "INSERT INTO staff_members (name, token_hash) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash,"
            " revoked_at = NULL, created_at = now()",
            (name, token_hash(token)),
        )
    return token


def list_staff(conn: Conn) -> list[dict[str, Any]]:
    """Every member of staff (never the token)."""
    return conn.execute(
        "SELECT id, name, created_at, revoked_at FROM staff_members ORDER BY name"
    ).fetchall()


def revoke_staff(conn: Conn, name: str) -> None:
    """Revoke a member of staff's token."""
    row = conn.execute(
        "UPDATE staff_members SET revoked_at = coalesce(revoked_at, now()) WHERE name = %s"
        " RETURNING id",
        (name,),
    ).fetchone()
    if row is None:
        raise ToiletAdminError(f"no staff member named {name!r}")


def reading_partitions(conn: Conn) -> list[tuple[str, date]]:
    """The readings table's monthly partitions: (name, first day of the month)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'toilet_readings'::regclass ORDER BY c.relname"
    ).fetchall()
    found = []
    for row in rows:
        match = _PARTITION.match(row["relname"])
        if match:
            found.append((row["relname"], date(int(match.group(1)), int(match.group(2)), 1)))
    return found


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def prune_readings(
    conn: Conn, older_than: timedelta, toilets: ToiletSettings | None = None
) -> dict[str, int]:
    """Drop readings observed before now - older_than (whole months as partitions, the rest
    row by row) and create the partitions ahead. Never younger than the ingest horizon: the
    duplicate check looks back that far."""
    toilets = toilets or ToiletSettings()
    horizon = timedelta(seconds=toilets.max_reading_age_s)
    if older_than < horizon:
        raise ToiletAdminError(
            f"--older-than must be at least the ingest horizon ({horizon.days}d,"
            " SERVICEMAP_TOILETS_MAX_READING_AGE_S): younger readings still stop duplicates"
        )
    cutoff = datetime.now(UTC) - older_than
    dropped = deleted = 0
    with conn.transaction():
        for name, month in reading_partitions(conn):
            end = datetime.combine(_next_month(month), datetime.min.time(), UTC)
            start = datetime.combine(month, datetime.min.time(), UTC)
            if end <= cutoff:
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                dropped += 1
            elif start < cutoff:
                cur = conn.execute(
                    sql.SQL("DELETE FROM {} WHERE observed_at < %s").format(sql.Identifier(name)),
                    (cutoff,),
                )
                deleted += cur.rowcount
        created = conn.execute("SELECT toilet_readings_maintain() AS n").fetchone()
    return {
        "partitions_dropped": dropped,
        "rows_deleted": deleted,
        "partitions_created": int(created["n"]) if created else 0,
    }


# --- commands ---------------------------------------------------------------------------------
