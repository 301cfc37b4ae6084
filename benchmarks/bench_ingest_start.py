"""Ingest start-up: how long `servicemap ingest` takes from process start to its first COPY.

Writes `servicemap sample --scale N` (GeoPackage) once, then, alternating between the two, runs
``servicemap ingest facilities.gpkg --layer-field layer --source scale`` as a subprocess into a
fresh copy of a migrated database for

* "before": the working tree with the files given by --paths as they were at --before (a git
  revision), copied to a temporary directory and put first on PYTHONPATH;
* "after": the working tree as it is.

The server logs every statement of those runs (``PGOPTIONS``: log_statement);
the time to the first COPY is the timestamp of the first COPY statement logged minus the moment the subprocess was started. Also times ``servicemap ingest --help`` (what the
command imports, and nothing else) for both. Prints the medians and the ratios before / after.

    python -m benchmarks.bench_ingest_start --before REV [--rows N] [--rounds K] [--timeline]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

from geoservice.db.connection import database_url
from geoservice.settings import PROJECT_ROOT, DatabaseSettings

#: the files this measurement is about (restored from --before for the baseline)
DEFAULT_PATHS = (
    "geoservice/cli/common.py",
    "geoservice/cli/main.py",
    "geoservice/cli/console.py",
    "geoservice/db/migrate.py",
    "geoservice/db/connection.py",
    "geoservice/db/__init__.py",
    "geoservice/settings.py",
    "ingest/readers.py",
)
PACKAGES = ("geoservice", "ingest", "layers")
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \w+ \[(\d+)\] \w+:  (.*)$")


def _baseline_tree(into: Path, revision: str, paths: list[str]) -> Path:
    """The working tree's packages, with `paths` as they were at `revision`."""
    for package in PACKAGES:
        shutil.copytree(
            PROJECT_ROOT / package, into / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    for path in paths:
        shown = subprocess.run(
            ["git", "show", f"{revision}:{path}"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            check=False,
        )
        target = into / path
        if shown.returncode == 0:
            target.write_bytes(shown.stdout)
        else:  # new since the revision
            target.unlink(missing_ok=True)
    return into


#: what the `servicemap` console script runs, from the tree in SERVICEMAP_TREE (the editable
#: install's finder, which would import the working tree whatever sys.path says, left out)
_BOOT = """
import os, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path.insert(0, os.environ["SERVICEMAP_TREE"])
sys.argv[0] = "servicemap"
if sys.argv[1:] == ["--where"]:
    import geoservice.cli.main as m
    print(m.__file__)
    raise SystemExit(0)
from geoservice.cli.main import main
sys.exit(main())
"""


def _env(tree: Path | None, **extra: str) -> dict[str, str]:
    return {**os.environ, **extra, "SERVICEMAP_TREE": str(tree or PROJECT_ROOT)}


def _command() -> list[str]:
    return [sys.executable, "-c", _BOOT]


def _check_tree(tree: Path | None) -> None:
    """The variant's code is the code run."""
    done = subprocess.run(
        [*_command(), "--where"],
        env=_env(tree),
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
    )
    expected = (tree or PROJECT_ROOT) / "geoservice" / "cli" / "main.py"
    if Path(done.stdout.strip()) != expected:
        raise SystemExit(f"{done.stdout.strip()} imported instead of {expected}")


def _help_s(tree: Path | None) -> float:
    """Wall time of `servicemap ingest --help`."""
    started = time.perf_counter()
    subprocess.run(
        [*_command(), "ingest", "--help"],
        env=_env(tree),
        capture_output=True,
        check=True,
        cwd=PROJECT_ROOT,
    )
    return time.perf_counter() - started


def _statements(log: Path, offset: int) -> list[tuple[float, str]]:
    """(epoch seconds, statement) of every statement logged from `offset` on.

    Only connections started with this script's PGOPTIONS log each statement as it starts
    (others' slow statements are logged as "duration: … statement: …", when they end).
    """
    found: list[tuple[float, str]] = []
    with log.open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            match = LOG_LINE.match(line)
            if match is None:
                if found and line.startswith("\t") and not found[-1][1].strip():
                    found[-1] = (found[-1][0], line.strip())  # a statement's first line
                continue
            stamp, _pid, message = match.groups()
            if message.startswith("statement: "):
                when = datetime.fromisoformat(stamp + "+00:00").timestamp()
                found.append((when, message.removeprefix("statement: ")))
    return found


def _first_copy_s(
    tree: Path | None, server: str, template: str, gpkg: Path, log: Path, timeline: bool
) -> tuple[float, float]:
    """(seconds to the first COPY, seconds in all) of one ingest into a fresh database."""
    name = f"{template}_run"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    url = f"{server.rpartition('/')[0]}/{name}"
    offset = log.stat().st_size
    env = _env(tree, DATABASE_URL=url, PGOPTIONS="-c log_statement=all")
    command = [*_command(), "ingest", str(gpkg), "--layer-field", "layer", "--source", "scale"]
    started_at, started = time.time(), time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=PROJECT_ROOT)
    whole = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout, done.stderr, sep="\n")
        raise SystemExit(f"ingest failed with exit code {done.returncode}")
    time.sleep(0.2)  # the logging collector writes asynchronously
    statements = _statements(log, offset)
    copies = [when for when, text in statements if text.lstrip().upper().startswith("COPY")]
    if not copies:
        raise SystemExit(f"no COPY statement of {name} found in {log}")
    if timeline:
        for when, text in statements:
            if when > copies[0]:
                break
            print(f"  {when - started_at:6.3f}s  {' '.join(text.split())[:100]}")
    return copies[0] - started_at, whole


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_ingest_start", description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision of the baseline")
    parser.add_argument("--paths", nargs="*", default=list(DEFAULT_PATHS))
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeline", action="store_true", help="print each run's statements")
    args = parser.parse_args(argv)

    from benchmarks.common import own_database
    from ingest.sample import write_scaled

    settings = DatabaseSettings()
    server = database_url(settings, start=True)
    log = settings.data_dir / "server.log"
    with (
        tempfile.TemporaryDirectory(prefix="bench_ingest_start_") as tmp,
        own_database("ingest_start") as template_url,
    ):
        before_tree = _baseline_tree(Path(tmp) / "before", args.before, args.paths)
        gpkg = write_scaled(Path(tmp), args.rows)["gpkg"]
        template = template_url.rpartition("/")[2]
        variants: dict[str, Path | None] = {"before": before_tree, "after": None}
        for tree in variants.values():
            _check_tree(tree)
        helps: dict[str, list[float]] = {k: [] for k in variants}
        firsts: dict[str, list[float]] = {k: [] for k in variants}
        wholes: dict[str, list[float]] = {k: [] for k in variants}
        try:
            for number in range(args.rounds):
                for label, tree in variants.items():
                    helps[label].append(_help_s(tree))
                    if args.timeline:
                        print(f"{label}, round {number + 1}:")
                    first, whole = _first_copy_s(tree, server, template, gpkg, log, args.timeline)
                    firsts[label].append(first)
                    wholes[label].append(whole)
        finally:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(f"{template}_run")
                    )
                )
    median = {k: {"help": statistics.median(helps[k]), "first": statistics.median(firsts[k]),
                  "whole": statistics.median(wholes[k])} for k in variants}  # fmt: skip
    print(f"{args.rows:,} rows, median of {args.rounds} alternating rounds; before = {args.before}")
    for what, title in (
        ("help", "`servicemap ingest --help`"),
        ("first", "start to first COPY"),
        ("whole", "whole ingest"),
    ):
        b, a = median["before"][what], median["after"][what]
        print(f"{title:28} before {b:6.2f}s  after {a:6.2f}s  ratio before/after {b / a:.2f}")


if __name__ == "__main__":
    main()
