"""What `servicemap` does before a command's own work: the schema check (exact, without Alembic)
and the imports (each module of commands only when one of its commands runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import typer
from alembic.script import ScriptDirectory

from geoservice.cli.main import COMMAND_MODULES, app, module_commands
from geoservice.db.connection import (
    SCHEMA_REVISION,
    DatabaseError,
    check_database,
    connect,
    schema_revisions,
)
from geoservice.db.migrate import alembic_config, head_revision


def test_the_schema_revision_is_the_newest_migration() -> None:
    # a new migration must bump SCHEMA_REVISION (else every command refuses a migrated database)
    assert SCHEMA_REVISION == head_revision()


def test_a_migrated_database_passes_the_schema_check(fresh_db: str) -> None:
    with connect(fresh_db) as conn:
        assert schema_revisions(conn) == [head_revision()]
    assert check_database(fresh_db, schema=True)


def test_a_database_one_migration_behind_is_refused(fresh_db: str) -> None:
    script = ScriptDirectory.from_config(alembic_config(fresh_db))
    previous = script.get_revision(head_revision()).down_revision
    assert isinstance(previous, str)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = %s", [previous])
    with pytest.raises(DatabaseError, match=r"not up to date: run `servicemap db migrate`"):
        check_database(fresh_db, schema=True)
    assert check_database(fresh_db)  # PostGIS alone is still fine


def test_ingest_into_a_database_never_migrated_names_the_fix(fresh_db: str, tmp_path: Path) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("DROP TABLE alembic_version")
        assert schema_revisions(conn) == []
    path = tmp_path / "toilets.csv"
    path.write_text("name,lon,lat\n翠竹公厕,114.12,22.55\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "geoservice.cli", "ingest", str(path), "--layer", "toilet"],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": fresh_db, "COLUMNS": "200"},
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: the database schema is not up to date: run `servicemap db migrate`"
    )
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM ingest_runs").fetchone() == (0,)


def test_each_module_adds_the_commands_listed_for_it() -> None:
    for module, names in COMMAND_MODULES.items():
        assert tuple(module_commands(module)) == names, module


def test_every_command_is_listed_once_plain_ones_first() -> None:
    group = typer.main.get_group(app)
    names = group.list_commands(typer.Context(group))
    lazy = [name for names_of in COMMAND_MODULES.values() for name in names_of]
    assert len(names) == len(set(names)) and set(lazy) <= set(names)
    assert {"db", "sample", "serve", "demo"} <= set(names)
    kinds = [isinstance(group.commands[name], typer.core.TyperGroup) for name in names]
    assert kinds == sorted(kinds), names  # groups (db, halls, …) after the plain commands


def test_a_mistyped_command_is_told_the_near_names_of_every_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "geoservice.cli", "ingst"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )
    assert result.returncode == 2
    assert "No such command 'ingst'. Did you mean 'ingest'" in result.stderr
