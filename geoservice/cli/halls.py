"""CLI commands for service halls: ``halls load``, ``halls upkeep``, ``halls list``.

The work is done by ``geoservice.halls.setup``; these commands add the console conventions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from geoservice.cli.common import migrated_database, settings
from geoservice.cli.console import fail, summary
from geoservice.db.connection import connect
from geoservice.halls.setup import HallsError, load_halls, read_halls, upkeep
from ingest.halls_sample import SPECIALISED_SOURCE
from ingest.pipeline import ingest_file

halls_app = typer.Typer(
    help="Service halls: windows, matters and slots (set-up as data); upkeep.",
    no_args_is_help=True,
)


@halls_app.command("load")
def halls_load(
    path: Annotated[Path, typer.Argument(help='halls JSON: {"halls": [{facility, windows, …}]}')],
) -> None:
    """Load (replace) halls' set-up; bookings are kept. Nothing is written if anything is wrong."""
    try:
        setup = read_halls(path)
    except HallsError as exc:
        fail(str(exc))
    with connect(migrated_database()) as conn:
        try:
            rows = load_halls(conn, setup)
        except HallsError as exc:
            fail(f"{path}: {exc}")
    summary(f"halls {path}", rows)


@halls_app.command("upkeep")
def halls_upkeep() -> None:
    """Lapse bookings not checked in; erase names and phones past the retention period."""
    s = settings().halls
    with connect(migrated_database()) as conn:
        counts = upkeep(conn, lapse_after_min=s.lapse_after_min, retention_days=s.retention_days)
    summary("halls upkeep", [counts])


_LIST = """
SELECT h.facility_id AS hall, f.name, h.slot_minutes, h.booking_days_ahead,
       (SELECT count(*) FROM hall_windows w WHERE w.hall_id = h.facility_id) AS windows,
       (SELECT count(*) FROM hall_matters m WHERE m.hall_id = h.facility_id) AS matters
  FROM halls h JOIN facilities f ON f.id = h.facility_id ORDER BY f.name
"""


@halls_app.command("list")
def halls_list() -> None:
    """The halls with a set-up."""
    with connect(migrated_database()) as conn:
        rows = [dict(r) for r in conn.execute(_LIST).fetchall()]
    summary("halls", rows)


def demo_halls(conn: Any, sample_dir: Path) -> None:
    """What `servicemap demo` loads after the catalogue: the specialised halls and halls.json."""
    ingest_file(
        conn,
        sample_dir / "halls_facilities.json",
        layer="service_hall",
        source=SPECIALISED_SOURCE,
    )
    load_halls(conn, read_halls(sample_dir / "halls.json"))


def register(app: typer.Typer) -> None:
    """Add the hall commands to the ``servicemap`` app."""
    app.add_typer(halls_app, name="halls")
