"""The ``servicemap`` command line: database, sample data, loading, serving."""

from __future__ import annotations

import gc
import importlib
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from geoservice.cli import replicas as cli_replicas
from geoservice.cli.common import database, migrated_database, settings
from geoservice.cli.console import err, fail, out, summary
from geoservice.db.cluster import Cluster
from geoservice.db.connection import DatabaseError, connect, database_url, mask_url
from geoservice.db.standbys import Standbys
from geoservice.settings import PROJECT_ROOT

# Heavy modules (the web app, uvicorn, Alembic, the samples) are imported inside the commands
# that use them, and each module of commands below only when one of its commands runs (or the
# list of all of them is shown): `servicemap ingest` starts without the others' imports.

#: the modules of geoservice.cli that add commands (their `register`), with the names they add,
#: in the order `servicemap --help` lists them (a test checks the names against `register`)
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest",),
    "disclosures": ("ingest-disclosures", "link", "qr"),
    "toilets": ("simulate-sensors", "devices", "staff", "readings"),
    "web": ("map",),
    "halls": ("halls",),
    "export": ("export",),
    "residents": ("notify",),
}
_MODULE_OF = {name: module for module, names in COMMAND_MODULES.items() for name in names}


def module_commands(module: str) -> dict[str, Any]:
    """The commands a module of geoservice.cli adds, by name, as `servicemap` runs them."""
    commands = typer.Typer()
    importlib.import_module(f"geoservice.cli.{module}").register(commands)
    return dict(typer.main.get_group(commands).commands)


class _Commands(TyperGroup):
    """servicemap's commands: those of COMMAND_MODULES are imported when first looked up."""

    # ctx and the commands are Click's (Typer's own copy of Click since 0.2x, click before): Any
    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        module = _MODULE_OF.get(cmd_name)
        if module is not None:
            self._add(module)
        elif cmd_name not in self.commands:  # a typo: "Did you mean …" picks from every name
            for each in COMMAND_MODULES:
                self._add(each)
        return super().get_command(ctx, cmd_name)

    def _add(self, module: str) -> None:
        if not all(name in self.commands for name in COMMAND_MODULES[module]):
            for name, command in module_commands(module).items():
                self.add_command(command, name)

    def list_commands(self, ctx: Any) -> list[str]:
        """Every name, as Typer orders them: plain commands first, then groups of commands."""
        for module in COMMAND_MODULES:
            self._add(module)
        in_order = [*(n for n in self.commands if n not in _MODULE_OF), *_MODULE_OF]
        groups = [n for n in in_order if isinstance(self.commands[n], TyperGroup)]
        return [n for n in in_order if n not in groups] + groups


app = typer.Typer(
    name="servicemap",
    cls=_Commands,
    help="A district's convenience services on one map and behind one API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(
    help="The database: embedded cluster (default) or DATABASE_URL.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
db_app.add_typer(cli_replicas.app, name="replica")


@db_app.command("up")
def db_up() -> None:
    """Ensure the database runs (creating the embedded cluster on first use); print its URL."""

    url = database(start=True)
    if not settings().db.url:
        Standbys(Cluster(settings().db)).start_all()  # the embedded cluster's standbys too
    out.print(mask_url(url) if os.environ.get("SERVICEMAP_MASK_URL") else url, soft_wrap=True)


@db_app.command("down")
def db_down() -> None:
    """Stop the embedded cluster (nothing to do with DATABASE_URL set)."""

    s = settings()
    if s.db.url:
        err.print("DATABASE_URL is set: the external server is left alone")
        return
    Standbys(Cluster(s.db)).stop_all()
    stopped = Cluster(s.db).down()
    err.print("stopped" if stopped else "not running")


@db_app.command("url")
def db_url() -> None:
    """Print the database URL in force (without starting anything)."""

    try:
        out.print(database_url(settings().db, start=False), soft_wrap=True)
    except DatabaseError as exc:
        fail(str(exc))


@db_app.command("migrate")
def db_migrate(
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Bring the schema to the latest version (Alembic)."""
    from geoservice.db.migrate import upgrade

    url = database()
    before, after = upgrade(url, revision)
    err.print(f"schema: {before or 'empty'} → {after}")


@app.command()
def sample(
    out_dir: Annotated[Path, typer.Option("--out", help="directory to write into")],
    scale: Annotated[
        int | None,
        typer.Option(
            help="write N facilities over all layers (GeoPackage + CSV)", min=1, max=10_000_000
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="random seed; the same seed writes the same files")
    ] = 42,
) -> None:
    """Write the synthetic Luohu sample: <layer>.geojson + disclosures.json, or --scale N files."""
    from ingest.halls_sample import write_halls
    from ingest.sample import write_sample, write_scaled

    bbox = settings().district.bbox
    started = time.monotonic()
    if scale is not None:
        with err.status(f"writing {scale:,} facilities"):
            paths = write_scaled(out_dir, scale, seed=seed, bbox=bbox)
        summary("sample --scale", [{"file": str(p), "facilities": scale} for p in paths.values()])
    else:
        files = write_sample(out_dir, seed=seed, bbox=bbox)
        rows = [{"file": str(p), "rows": files.counts[k]} for k, p in files.layer_files.items()]
        rows.append({"file": str(files.disclosures), "rows": files.counts["documents"]})
        rows += [{"file": str(p), "rows": n} for p, n in write_halls(out_dir).items()]
        summary("sample", rows)
    err.print(f"done in {time.monotonic() - started:.1f}s")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="interface to bind (default SERVICEMAP_HOST)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="port (default SERVICEMAP_PORT)", min=1, max=65535)
    ] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes", min=1, max=64)] = None,
) -> None:
    """Serve the map and the API (uvicorn; with several workers, one socket each)."""
    from geoservice.cli.workers import serve as run_workers

    s = settings()
    url = migrated_database()
    # workers build their own settings from the environment: hand them the resolved URL
    os.environ["DATABASE_URL"] = url
    bind_host, bind_port = host or s.service.host, port or s.service.port
    err.print(f"serving on http://{bind_host}:{bind_port} (Ctrl-C stops)")
    try:
        run_workers(bind_host, bind_port, workers or s.service.workers, s.service.log_level)
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot listen on {bind_host}:{bind_port}: {exc.strerror}"
        ) from exc


@app.command()
def demo(
    host: Annotated[str | None, typer.Option(help="interface to bind")] = None,
    port: Annotated[int | None, typer.Option(help="port", min=1, max=65535)] = None,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="load only, do not serve")] = False,
) -> None:
    """db up + migrate + sample + ingest + link + serve: the whole district in one command."""
    from geoservice.cli import disclosures as cli_disclosures
    from geoservice.cli import halls as cli_halls
    from geoservice.cli import ingest as cli_ingest
    from geoservice.db.migrate import upgrade
    from ingest.halls_sample import write_halls
    from ingest.pipeline import ingest_file
    from ingest.sample import write_sample

    url = database()
    upgrade(url)
    sample_dir = PROJECT_ROOT / ".data" / "sample"
    files = write_sample(sample_dir, bbox=settings().district.bbox)
    rows = []
    with connect(url) as conn:
        for layer, path in files.layer_files.items():
            counts = ingest_file(conn, path, layer=layer, source="sample")
            rows.append({"layer": layer, "read": counts.staged, "inserted": counts.inserted,
                         "updated": counts.updated, "unchanged": counts.unchanged})  # fmt: skip
        for step in cli_disclosures.DEMO_STEPS:
            step(conn, files.disclosures)
        write_halls(sample_dir)
        cli_halls.demo_halls(conn, sample_dir)
        cli_ingest.analyze_loaded(conn)
    summary("sample district loaded", rows)
    if not no_serve:
        serve(host=host, port=port, workers=None)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    finally:
        # Whatever is alive now dies with the process: frozen, the collections of the
        # interpreter's shutdown skip it (~0.2 s of every command's exit with pandas and Arrow
        # loaded, measured against the same imports without)
        gc.freeze()


if __name__ == "__main__":
    main()
