"""CLI commands for web: ``servicemap map --out FILE.html`` (the map as one standalone file)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from psycopg.rows import dict_row

import layers
from geoservice.cli.common import migrated_database, settings
from geoservice.cli.console import err, fail, summary
from geoservice.db.connection import libpq_url
from geoservice.settings import Settings

# the web package (Folium, FastAPI) is imported by the command, not by every servicemap start

#: steps `servicemap demo` runs after loading the sample facilities: (connection, catalogue path)
DEMO_STEPS: list[Callable[[Any, Path], None]] = []


async def _export(url: str, s: Settings, keys: list[str]) -> dict[str, Any]:
    from web.map import embedded_data

    async with await psycopg.AsyncConnection.connect(
        libpq_url(url), row_factory=dict_row, autocommit=True
    ) as conn:
        generated = datetime.now(UTC).isoformat(timespec="seconds")
        return await embedded_data(conn, s, keys, generated_at=generated)


def map_file(
    out: Annotated[Path, typer.Option("--out", help="the HTML file to write")],
    layer: Annotated[
        list[str] | None,
        typer.Option("--layer", help="a layer to include (repeat; default: all)"),
    ] = None,
    lang: Annotated[
        str | None, typer.Option(help="interface language: zh-Hans, zh-Hant or en")
    ] = None,
) -> None:
    """Write the district map as one standalone HTML file that opens offline.

    Facilities (with live status, ratings and their newest disclosures) and every script
    and style are inside the file; only the base-map tiles come from the tile server.
    """
    from web.i18n import LANGUAGES
    from web.map import INSTALL_HINT, build_map, missing_assets

    s = settings()
    known = layers.all_layers()
    keys = list(dict.fromkeys(layer or known))
    unknown = [k for k in keys if k not in known]
    if unknown:
        fail(f"--layer {unknown[0]!r} is not a layer; known layers: {', '.join(known)}")
    language = lang or s.district.default_lang
    if language not in LANGUAGES:
        fail(f"--lang must be one of {', '.join(LANGUAGES)}, got {language!r}")
    if missing_assets():
        fail(f"front-end assets missing ({', '.join(missing_assets())}): {INSTALL_HINT}")
    url = migrated_database()
    with err.status("reading facilities"):
        try:
            data = asyncio.run(_export(url, s, keys))
        except ValueError as exc:
            fail(str(exc))
    counts: dict[str, int] = {}
    for row in data["rows"]:
        key = data["layers"][row[1]]
        counts[key] = counts.get(key, 0) + 1
    html = build_map(
        s, lang=language, counts=counts, layer_keys=keys, embedded=data, inline_assets=True
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    # written beside the target and renamed: a reader never sees half a file
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    partial.write_text(html, encoding="utf-8")
    partial.replace(out)
    summary(
        "map written",
        [{"file": str(out), "layer": k, "facilities": counts.get(k, 0)} for k in keys]
        + [{"file": str(out), "layer": "(bytes)", "facilities": len(html.encode())}],
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the servicemap CLI."""
    app.command("map")(map_file)
