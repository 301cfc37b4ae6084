"""``servicemap export --layer KEY --out FILE``: a layer's facilities as open data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

import layers
from geoservice.cli.common import migrated_database
from geoservice.cli.console import fail, progress, summary
from geoservice.db.connection import connect

# geoservice.query.downloads (pyarrow, pyogrio, FastAPI) is imported by the command only


def export(
    layer: Annotated[str, typer.Option("--layer", help="the layer to export")],
    out: Annotated[
        Path, typer.Option("--out", help="the file to write; its extension names the format")
    ],
    source: Annotated[
        str | None,
        typer.Option(help="only this source's facilities (re-ingest with --source SOURCE)"),
    ] = None,
) -> None:
    """Write a layer's live facilities to CSV, GeoJSON, GeoPackage or GeoParquet (by extension).

    Streamed in batches (memory stays bounded whatever the layer's size); loading the file
    again with `servicemap ingest FILE --layer KEY --source SOURCE` changes nothing.
    """
    from geoservice.query.downloads import ExportError, count_rows, export_layer, format_of

    if layer not in layers.all_layers():
        fail(f"--layer {layer!r} is not a layer; known layers: {', '.join(layers.all_layers())}")
    try:
        fmt = format_of(out)
    except ExportError as exc:
        fail(f"--out {exc}")
    url = migrated_database()
    started = time.monotonic()
    with connect(url) as conn, progress() as bar:
        total = count_rows(conn, layer, source)
        task = bar.add_task(f"writing {out.name}", total=total)
        try:
            written = export_layer(
                conn,
                layer,
                out,
                fmt=fmt,
                source=source,
                progress=lambda n: bar.advance(task, n),
            )
        except (ExportError, OSError) as exc:
            fail(f"cannot write {out}: {exc}")
    summary(
        f"export {layer}",
        [
            {
                "file": str(out),
                "format": fmt,
                "facilities": written,
                "bytes": out.stat().st_size,
                "seconds": round(time.monotonic() - started, 1),
            }
        ],
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the servicemap CLI."""
    app.command("export")(export)
