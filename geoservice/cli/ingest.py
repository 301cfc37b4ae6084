"""``servicemap ingest``: load facility files of any format, atomically and idempotently."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from psycopg.rows import dict_row

from geoservice.cli.common import migrated_database, settings
from geoservice.cli.console import err, fail, progress, summary, table
from geoservice.db.connection import connect, libpq_url
from geoservice.disclosures.linking import link_all
from ingest.mapping import Mapping, load_mapping
from ingest.pipeline import IngestFailed, IngestOptions, record_failed, run_ingest
from ingest.report import IngestError, IngestReport

#: steps `servicemap demo` runs after loading the sample facilities: (connection, catalogue path)
DEMO_STEPS: list[Callable[[Any, Path], None]] = []

#: issues printed on the terminal (all of them go to --report)
_SHOWN_ISSUES = 20


PathArg = Annotated[
    Path,
    typer.Argument(
        help="the file: CSV, Excel (.xlsx, .xls), GeoJSON, GeoPackage, Shapefile (.shp or .zip), "
        "FlatGeobuf, GeoParquet, OSM PBF, or saved Amap/Tencent/Baidu POI responses"
    ),
]
MappingOpt = Annotated[Path | None, typer.Option("--mapping", help="TOML mapping file")]
LayerOpt = Annotated[str | None, typer.Option(help="every row goes to this layer")]
LayerFieldOpt = Annotated[
    str | None, typer.Option("--layer-field", help="column holding each row's layer")
]
SourceOpt = Annotated[
    str | None, typer.Option(help="source name (ids are stable per source); default: file stem")
]
CrsOpt = Annotated[
    str | None,
    typer.Option(help="coordinates' CRS when the file does not say: EPSG:n, gcj02, bd09"),
]
XOpt = Annotated[str | None, typer.Option("--x", help="column of x / longitude / easting")]
YOpt = Annotated[str | None, typer.Option("--y", help="column of y / latitude / northing")]
SkipInvalidOpt = Annotated[
    bool, typer.Option("--skip-invalid", help="load the valid rows, report the rest")
]
AllowOutsideOpt = Annotated[
    bool, typer.Option("--allow-outside", help="keep points outside the district's extent")
]
FullOpt = Annotated[
    bool, typer.Option("--full", help="the file is the whole source: mark missing ones removed")
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="validate and count only; write nothing")
]
ReportOpt = Annotated[
    Path | None, typer.Option("--report", help="write the run's report (rejects) as JSON")
]
SheetOpt = Annotated[
    str | None,
    typer.Option("--sheet", help="Excel: the sheet, by name or number (1 = the first)"),
]
HeaderRowOpt = Annotated[
    int | None,
    typer.Option(
        "--header-row", min=1, help="Excel: the header's row number (default: found under titles)"
    ),
]
EncodingOpt = Annotated[
    str | None,
    typer.Option(
        "--encoding",
        help="CSV and Shapefile DBF text encoding, e.g. gbk (default: detected)",
    ),
]
LinkOpt = Annotated[
    bool,
    typer.Option(
        "--link/--no-link", help="re-link facilities to disclosures when anything changed"
    ),
]
H3Opt = Annotated[
    bool,
    typer.Option(
        "--h3/--no-h3",
        help="index changed facilities' H3 cells now (else the first /api/v1/h3 requests do;"
        " a first load into empty H3 tables writes them as it loads either way)",
    ),
]


def ingest(
    path: PathArg,
    mapping: MappingOpt = None,
    layer: LayerOpt = None,
    layer_field: LayerFieldOpt = None,
    source: SourceOpt = None,
    crs: CrsOpt = None,
    x: XOpt = None,
    y: YOpt = None,
    skip_invalid: SkipInvalidOpt = False,
    allow_outside: AllowOutsideOpt = False,
    full: FullOpt = False,
    dry_run: DryRunOpt = False,
    report: ReportOpt = None,
    sheet: SheetOpt = None,
    header_row: HeaderRowOpt = None,
    encoding: EncodingOpt = None,
    link: LinkOpt = True,
    index_h3: H3Opt = True,
) -> None:
    """Load facilities from a file; atomic unless --skip-invalid; re-running changes nothing."""
    if layer is not None and layer_field is not None:
        fail("give either --layer KEY or --layer-field COL, not both")
    if (x is None) != (y is None):
        fail("give both --x COL and --y COL")
    s = settings()
    url = migrated_database()
    flags = {"layer": layer, "layer_field": layer_field, "source": source, "crs": crs}
    chosen = _mapping(url, path, mapping, report, x=x, y=y, **flags)
    options = IngestOptions(
        mapping=chosen,
        skip_invalid=skip_invalid,
        allow_outside=allow_outside,
        full=full,
        dry_run=dry_run,
        bbox=s.district.bbox,
        timezone=s.district.timezone,
        lang=s.district.default_lang,
        sheet=sheet,
        header_row=header_row,
        encoding=encoding,
    )
    result = _load(url, path, options, report)
    if result.outcome == "dry_run":
        err.print("dry run: nothing written")
        return
    if result.inserted or result.updated or result.removed:
        _derive(url, index_h3=index_h3, link=link)


def _mapping(
    url: str, path: Path, mapping: Path | None, report: Path | None, **flags: str | None
) -> Mapping:
    """The mapping file merged with the flags; a bad one is recorded as a failed run."""
    try:
        base = load_mapping(mapping) if mapping is not None else Mapping()
        chosen = base.merged(**flags)
    except IngestError as exc:
        # a run that never started is still a run: recorded as failed
        with connect(url) as conn:
            failed = record_failed(conn, path, flags["source"], str(exc))
        if report is not None:
            failed.write_json(report)
        fail(str(exc))
    if flags["x"] is not None:
        chosen.wkt = None
    return chosen


def _load(url: str, path: Path, options: IngestOptions, report: Path | None) -> IngestReport:
    """Run the load with a progress bar; print its issues and summary (and --report)."""

    def finish(result: IngestReport) -> None:
        if report is not None:
            result.write_json(report)
        _print_issues(result)
        summary(f"ingest {path.name}", [result.summary_row()])

    with connect(url) as conn, progress() as bar:
        task = bar.add_task(f"reading {path.name}", total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = run_ingest(conn, path, options, advance)
        except IngestFailed as exc:
            bar.stop()
            finish(exc.report)
            fail(exc.report.failure_line())
    finish(result)
    return result


def _derive(url: str, *, index_h3: bool, link: bool) -> None:
    """Derived work after a load that changed rows: H3 cells now, facility ↔ matter links."""
    if index_h3:
        _index_h3(url)
    if link:
        with connect(url) as conn:
            linked = link_all(conn)
        diffs = (linked.rules, linked.name_matches)
        err.print(
            f"links: +{sum(d.added for d in diffs)} ~{sum(d.updated for d in diffs)} "
            f"-{sum(d.removed for d in diffs)}"
        )
    with connect(url) as conn:
        analyze_loaded(conn)


#: the columns of facilities whose statistics shape the plans of the service's queries (joins,
#: the filters of nearest, features, tiles and H3, the upsert of the next load)
PLANNED_COLUMNS = (
    "id", "source", "source_id", "layer", "status", "geom", "accessible", "opening_hours",
    "updated_at",
)  # fmt: skip
#: tables whose statistics a load changes (facilities; the H3 counts derived from them)
_ANALYZE = f"ANALYZE facilities ({', '.join(PLANNED_COLUMNS)}), h3_counts"


def analyze_loaded(conn: psycopg.Connection[Any]) -> None:
    """Fresh planner statistics after a load: plans made for the table before it (a wrong row
    estimate, a sequential scan) would otherwise serve the first requests after a large load.

    The columns the queries plan on, now (a third of a whole ANALYZE's time: names, addresses
    and attributes cost the rest); autovacuum's analyze, which a large load triggers within
    a minute, covers every column.
    """
    conn.execute(_ANALYZE)


def _index_h3(url: str) -> None:
    """Count the H3 cells of changed facilities now, not on the first map request."""
    from geoservice.query.h3sync import pending_count, sync_cells

    async def run() -> None:
        conn = await psycopg.AsyncConnection.connect(
            libpq_url(url), row_factory=dict_row, autocommit=True
        )
        async with conn:
            total = await pending_count(conn)
            with progress() as bar:
                task = bar.add_task("counting H3 cells", total=total)
                while (left := await sync_cells(conn)) > 0:
                    bar.update(task, completed=total - left)

    asyncio.run(run())


def _print_issues(result: IngestReport) -> None:
    issues = sorted(result.issues, key=lambda i: (i.severity != "error", i.row or 0))
    if not issues:
        return
    rows = [
        {"severity": item.severity, "where": item.where(), "field": item.field or "",
         "value": _shown(item.value), "reason": item.reason}
        for item in issues[:_SHOWN_ISSUES]
    ]  # fmt: skip
    title = f"{result.errors:,} error(s), {result.warnings:,} warning(s) ({result.row_numbers()})"
    table(title, rows, console=err, fold=("field", "value", "reason"))
    more = len(result.issues) + result.issues_dropped - _SHOWN_ISSUES
    if more > 0:
        err.print(f"… and {more:,} more (all of them: --report FILE.json)")


def _shown(value: str | None) -> str:
    """An issue's value as the terminal shows it: the first 60 characters."""
    return "" if value is None else value if len(value) <= 60 else value[:60] + "…"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the servicemap CLI."""
    app.command("ingest")(ingest)
