"""CLI commands for smart toilets: ``devices``, ``staff``, ``readings prune``, ``simulate-sensors``.

The work is done by ``geoservice.toilets.admin``; these commands add the console conventions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from geoservice.cli.common import migrated_database, settings
from geoservice.cli.console import err, fail, out, summary
from geoservice.db.connection import connect

# geoservice.toilets (its token helpers come with the API) is imported by the commands only
if TYPE_CHECKING:
    from geoservice.toilets.admin import Conn

#: steps `servicemap demo` runs after loading the sample facilities: (connection, catalogue path)
DEMO_STEPS: list[Callable[[Any, Path], None]] = []


def _connection() -> Conn:

    return connect(migrated_database(), autocommit=True)


devices_app = typer.Typer(help="Smart-toilet sensors and their tokens.", no_args_is_help=True)
staff_app = typer.Typer(help="Sanitation staff and their tokens.", no_args_is_help=True)
readings_app = typer.Typer(help="Stored sensor readings.", no_args_is_help=True)


@devices_app.command("add")
def devices_add(
    facility: Annotated[str, typer.Option(help="the toilet's facility id")],
    stalls: Annotated[
        int, typer.Option(help="stalls to register now ('1'..'N'); more register on use")
    ] = 0,
) -> None:
    """Register a sensor for a toilet; prints its token once (only its hash is kept)."""
    from geoservice.toilets.admin import ToiletAdminError, add_device

    with _connection() as conn:
        try:
            device_id, token = add_device(conn, facility, stalls)
        except ToiletAdminError as exc:
            fail(str(exc))
    err.print(f"device {device_id} registered for {facility}; its token (shown only now):")
    out.print(token, soft_wrap=True, highlight=False)


@devices_app.command("list")
def devices_list() -> None:
    """List devices (never their tokens)."""
    from geoservice.toilets.admin import list_devices

    with _connection() as conn:
        rows = list_devices(conn)
    summary("devices", rows)


@devices_app.command("revoke")
def devices_revoke(
    device_id: Annotated[int, typer.Argument(help="the device id (see devices list)")],
) -> None:
    """Revoke a device's token; it can post nothing more."""
    from geoservice.toilets.admin import ToiletAdminError, revoke_device

    with _connection() as conn:
        try:
            revoke_device(conn, device_id)
        except ToiletAdminError as exc:
            fail(str(exc))
    err.print(f"device {device_id} revoked")


@staff_app.command("add")
def staff_add(
    name: Annotated[str, typer.Option(help="the staff member's name")],
) -> None:
    """Give a member of staff a token; prints it once (only its hash is kept)."""
    from geoservice.toilets.admin import ToiletAdminError, add_staff

    with _connection() as conn:
        try:
            token = add_staff(conn, name)
        except ToiletAdminError as exc:
            fail(str(exc))
    err.print(f"staff {name!r} added; their token (shown only now):")
    out.print(token, soft_wrap=True, highlight=False)


@staff_app.command("list")
def staff_list() -> None:
    """List staff (never their tokens)."""
    from geoservice.toilets.admin import list_staff

    with _connection() as conn:
        rows = list_staff(conn)
    summary("staff", rows)


@staff_app.command("revoke")
def staff_revoke(
    name: Annotated[str, typer.Argument(help="the staff member's name")],
) -> None:
    """Revoke a member of staff's token."""
    from geoservice.toilets.admin import ToiletAdminError, revoke_staff

    with _connection() as conn:
        try:
            revoke_staff(conn, name)
        except ToiletAdminError as exc:
            fail(str(exc))
    err.print(f"staff {name!r} revoked")


@readings_app.command("prune")
def readings_prune(
    older_than: Annotated[
        str, typer.Option(help="drop readings observed longer ago than this: 400d, 12w, 36h")
    ] = "400d",
) -> None:
    """Drop old readings (whole monthly partitions where possible); create months ahead."""
    from geoservice.toilets.admin import ToiletAdminError, parse_duration, prune_readings

    try:
        age = parse_duration(older_than)
    except ToiletAdminError as exc:
        fail(str(exc))
    with _connection() as conn:
        try:
            counts = prune_readings(conn, age)
        except ToiletAdminError as exc:
            fail(str(exc))
    summary(f"readings older than {older_than} pruned", [counts])


def simulate_sensors(
    toilets: Annotated[
        int, typer.Option(help="how many toilets get a simulated sensor", min=1, max=5000)
    ] = 20,
    interval: Annotated[
        float, typer.Option(help="seconds between readings of each sensor", min=0.05)
    ] = 10.0,
    url: Annotated[
        str | None, typer.Option(help="the service (default http://SERVICEMAP_HOST:PORT)")
    ] = None,
    duration: Annotated[
        float, typer.Option(help="stop after this many seconds (0: until Ctrl-C)", min=0)
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed")] = 7,
) -> None:
    """Drive realistic occupancy from simulated sensors through the HTTP API (demo)."""
    from geoservice.toilets.simulator import run_simulation

    service = settings().service
    target = url or f"http://{service.host}:{service.port}"
    with _connection() as conn:
        totals = run_simulation(
            conn,
            toilets=toilets,
            interval=interval,
            url=target,
            duration=duration,
            seed=seed,
            say=err.print,
        )
    summary("simulated sensors", [totals])


def register(app: typer.Typer) -> None:
    """Add this module's commands to the servicemap CLI."""
    app.add_typer(devices_app, name="devices")
    app.add_typer(staff_app, name="staff")
    app.add_typer(readings_app, name="readings")
    app.command("simulate-sensors")(simulate_sensors)
