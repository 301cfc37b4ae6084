"""CLI commands for the five disclosures: ``ingest-disclosures``, ``link``, ``qr``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

import layers
from geoservice.cli.common import migrated_database, settings
from geoservice.cli.console import err, fail, summary
from geoservice.db.connection import connect
from layers.facility import live

# linking, the catalogue loader and the QR sheets are imported by the commands that use them
if TYPE_CHECKING:
    from geoservice.disclosures.linking import LinkReport
    from ingest.disclosures import LoadReport


def _demo_catalogue(conn: Any, catalogue: Path) -> None:
    """Load the sample catalogue and link it to the facilities just loaded."""
    from geoservice.disclosures.linking import link_all
    from ingest.disclosures import ingest_catalogue

    ingest_catalogue(conn, catalogue)
    link_all(conn)


#: steps `servicemap demo` runs after loading the sample facilities: (connection, catalogue path)
DEMO_STEPS: list[Callable[[Any, Path], None]] = [_demo_catalogue]


def print_link_report(report: LinkReport) -> None:
    """The link summary table on stdout."""
    rows = [
        {"links": kind, "total": d.total, "added": d.added, "updated": d.updated,
         "removed": d.removed}
        for kind, d in (("rule (layer ↔ matter)", report.rules),
                        ("name_match (facility ↔ document)", report.name_matches))
    ]  # fmt: skip
    rows.append({"links": "manual (facility ↔ matter)", "total": report.manual,
                 "added": 0, "updated": 0, "removed": 0})  # fmt: skip
    summary("links", rows)
    err.print(
        f"{report.facilities:,} facilities, {report.documents:,} documents, "
        f"{report.matters:,} matters, {report.patterns:,} facility names searched for; "
        f"{report.manual_excluded} manual exclusions, {report.manual_unresolved} manual links "
        f"naming no loaded facility; {report.duration_s:.2f}s"
        + ("" if report.changed else "; nothing changed"),
        soft_wrap=True,
    )


def _print_load(report: LoadReport, path: Path) -> None:
    rows = [{"table": table, **counts} for table, counts in report.counts.items()]
    summary(f"catalogue {path}", rows)


def ingest_disclosures(
    path: Annotated[
        Path,
        typer.Argument(
            help="catalogue: a JSON file {matters, documents, links} or a directory "
            "with matters.csv, documents.csv and optionally links.csv"
        ),
    ],
    full: Annotated[
        bool,
        typer.Option(help="delete stored matters and documents missing from the catalogue"),
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="validate and report only")] = False,
    no_link: Annotated[
        bool, typer.Option("--no-link", help="do not re-link facilities afterwards")
    ] = False,
    report_file: Annotated[
        Path | None, typer.Option("--report", help="write the rejected rows to this JSON")
    ] = None,
) -> None:
    """Load the disclosure catalogue (matters, documents, manual links), then link."""
    from geoservice.disclosures.linking import link_all
    from ingest.disclosures import CatalogueError, CatalogueInvalid, ingest_catalogue

    url = migrated_database()
    with connect(url) as conn:
        try:
            with err.status(f"loading {path}"):
                report = ingest_catalogue(conn, path, full=full, dry_run=dry_run)
        except CatalogueInvalid as exc:
            for problem in exc.problems[:20] if len(exc.problems) > 1 else []:
                err.print(f"  {problem}", soft_wrap=True, highlight=False, markup=False)
            if len(exc.problems) > 20:
                err.print(f"  … {len(exc.problems) - 20} more")
            if report_file:
                rejects = [p.as_dict() for p in exc.problems]
                report_file.write_text(json.dumps({"rejects": rejects}, ensure_ascii=False))
            fail(f"{exc}; nothing was written")
        except CatalogueError as exc:
            fail(f"{exc}; nothing was written")
        if report_file:
            report_file.write_text(json.dumps({"rejects": [], "counts": report.counts}))
        _print_load(report, path)
        if dry_run or no_link:
            return
        with err.status("linking facilities"):
            links = link_all(conn)
        print_link_report(links)


def link() -> None:
    """(Re)compute facility ↔ matter ↔ document links; report what was added and removed."""
    from geoservice.disclosures.linking import effective_link_counts, link_all

    url = migrated_database()
    with connect(url) as conn:
        with err.status("linking facilities"):
            report = link_all(conn)
        in_force = effective_link_counts(conn)
    print_link_report(report)
    err.print(
        "facility ↔ matter links in force: "
        + ", ".join(f"{method} {n:,}" for method, n in in_force.items()),
        soft_wrap=True,
    )


def qr(
    layer: Annotated[list[str], typer.Option("--layer", help="layer key (repeat for several)")],
    out_dir: Annotated[Path, typer.Option("--out", help="directory to write the sheets into")],
    include_removed: Annotated[
        bool, typer.Option(help="also print codes of removed facilities")
    ] = False,
) -> None:
    """Write a printable A4 SVG sheet per layer: each facility's QR code, its name under it."""
    from web.qr import SheetItem, facility_url, sheet

    known = layers.all_layers()
    for key in layer:
        if key not in known:
            fail(f"--layer {key!r} is not a layer; known layers: {', '.join(known)}")
    public_url = settings().service.public_url
    url = migrated_database()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with connect(url) as conn:
        for key in dict.fromkeys(layer):
            facilities = conn.execute(
                "SELECT id, name FROM facilities WHERE layer = %s "
                f"AND (%s OR {live(None)}) ORDER BY name, id",
                (key, include_removed),
            ).fetchall()
            items = [SheetItem(f["name"], facility_url(public_url, f["id"])) for f in facilities]
            path = out_dir / f"{key}.svg"
            title = f"{known[key].name('zh-Hans')} · {known[key].name('en')}"
            path.write_text(sheet(items, title=title), encoding="utf-8")
            rows.append({"layer": key, "codes": len(items), "file": str(path)})
    summary("QR sheets (A4, 20 per page)", rows)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the servicemap CLI."""
    app.command("ingest-disclosures")(ingest_disclosures)
    app.command("link")(link)
    app.command("qr")(qr)
