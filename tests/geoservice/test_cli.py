"""The servicemap CLI as a user runs it: real subprocesses, real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

SERVICEMAP = [sys.executable, "-m", "geoservice.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVICEMAP, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=300,
    )


def test_every_command_has_help() -> None:
    top = run("--help")
    assert top.returncode == 0
    for command in ("db", "sample", "serve", "demo"):
        assert command in top.stdout
        assert run(command, "--help").returncode == 0
    for sub in ("up", "down", "url", "migrate"):
        assert run("db", sub, "--help").returncode == 0


def test_unreachable_database_is_one_clear_line() -> None:
    result = run("db", "migrate", env={"DATABASE_URL": "postgresql://u:secret@127.0.0.1:1/x"})
    assert result.returncode != 0
    assert "127.0.0.1:1" in result.stderr and "secret" not in result.stderr
    assert "***" in result.stderr and "Traceback" not in result.stderr


def test_database_without_postgis_names_the_fix(fresh_db: str, server_url: str) -> None:
    # a database where PostGIS cannot be created: a role without the right to create it
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS smtest_nopostgis")
        admin.execute("CREATE ROLE smtest_nopostgis LOGIN PASSWORD 'pw'")
    name = fresh_db.rpartition("/")[2]
    host = fresh_db.split("@")[1].split("/")[0]
    with psycopg.connect(server_url.rpartition("/")[0] + "/" + name, autocommit=True) as conn:
        conn.execute("DROP EXTENSION postgis CASCADE")
    try:
        url = f"postgresql://smtest_nopostgis:pw@{host}/{name}"
        result = run("db", "migrate", env={"DATABASE_URL": url})
        assert result.returncode != 0
        assert "PostGIS" in result.stderr and "pw@" not in result.stderr
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f"REVOKE ALL ON DATABASE {name} FROM smtest_nopostgis")
            admin.execute("DROP OWNED BY smtest_nopostgis")
            admin.execute("DROP ROLE smtest_nopostgis")


def test_bad_setting_is_one_clear_line() -> None:
    result = run("db", "url", env={"SERVICEMAP_DISTRICT_BBOX": "1,2,3"})
    assert result.returncode != 0
    assert "bbox" in result.stderr and "Traceback" not in result.stderr


def test_db_url_prints_the_external_url() -> None:
    url = "postgresql://someone:pw@db.example:5432/x"
    result = run("db", "url", env={"DATABASE_URL": url})
    assert result.returncode == 0 and result.stdout.strip() == url


def test_sample_writes_the_contract_files(tmp_path: Path) -> None:
    result = run("sample", "--out", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    names = {p.name for p in (tmp_path / "s").iterdir()}
    assert names == {
        "school.geojson",
        "clinic.geojson",
        "eldercare.geojson",
        "service_hall.geojson",
        "toilet.geojson",
        "disclosures.json",
        "halls.json",
        "halls_facilities.json",
    }
    scaled = run("sample", "--out", str(tmp_path / "n"), "--scale", "2000", "--seed", "3")
    assert scaled.returncode == 0, scaled.stderr
    assert {p.name for p in (tmp_path / "n").iterdir()} == {"facilities.gpkg", "facilities.csv"}
    assert run("sample", "--out", str(tmp_path / "x"), "--scale", "0").returncode != 0


def test_demo_loads_the_sample_and_reruns_idempotently(fresh_db: str) -> None:
    env = {"DATABASE_URL": fresh_db}
    first = run("demo", "--no-serve", env=env)
    assert first.returncode == 0, first.stderr
    with psycopg.connect(fresh_db) as conn:
        row = conn.execute("SELECT count(*), max(updated_at) FROM facilities").fetchone()
    assert row is not None and row[0] >= 600
    second = run("demo", "--no-serve", env=env)
    assert second.returncode == 0, second.stderr
    with psycopg.connect(fresh_db) as conn:
        again = conn.execute("SELECT count(*), max(updated_at) FROM facilities").fetchone()
    assert again == row


#: runs the CLI in-process, then prints which of the web stack's modules it loaded ("loaded"),
#: and which of those only other commands need ("others")
_LOADED = """
import json, sys
from geoservice.cli.main import app
try:
    app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = ("fastapi", "starlette", "uvicorn", "folium", "web")
others = ("alembic", "sqlalchemy", "geoalchemy2", "geoservice.db.models", "geoservice.db.migrate",
          "geoservice.halls", "geoservice.residents", "geoservice.toilets", "ingest.halls_sample",
          "ingest.sample", "geoservice.cli.halls", "geoservice.cli.disclosures",
          "geoservice.cli.toilets", "geoservice.cli.web", "geoservice.cli.export",
          "geoservice.cli.residents")
print(json.dumps({"code": code, "loaded": [m for m in heavy if m in sys.modules],
                  "others": [m for m in others if m in sys.modules]}))
"""


def _loaded(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _LOADED, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=300,
    )
    outcome: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


def test_help_and_a_load_leave_the_web_stack_unloaded(fresh_db: str, tmp_path: Path) -> None:
    # `servicemap ingest` pays in memory and start-up time for every module the CLI imports:
    # not the web's, and not those of the other commands (the list of all of them needs those)
    top = _loaded("--help")
    assert (top["code"], top["loaded"]) == (0, [])
    assert _loaded("ingest", "--help") == {"code": 0, "loaded": [], "others": []}
    toilets = tmp_path / "toilets.geojson"
    toilets.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": f"翠竹公厕{i}"},
                        "geometry": {"type": "Point", "coordinates": [114.12 + i / 1000, 22.55]},
                    }
                    for i in range(5)
                ],
            }
        ),  # fmt: skip
        encoding="utf-8",
    )
    loaded = _loaded(
        "ingest", str(toilets), "--layer", "toilet", "--source", "t",
        env={"DATABASE_URL": fresh_db},
    )  # fmt: skip
    # the H3 step counts through geoservice.query.h3sync, not beside the HTTP route
    assert (loaded["code"], loaded["loaded"]) == (0, []), loaded
    # the schema check reads the revision itself: no Alembic, no SQLAlchemy, no models
    assert loaded["others"] == [], loaded
