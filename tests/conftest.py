"""Shared fixtures: a throwaway PostGIS database per session (never the demo database).

- ``server_url``: the PostGIS server (DATABASE_URL, else the embedded cluster, started).
- ``template_db``: a migrated, empty database that fresh databases are copied from.
- ``fresh_db``: an empty migrated database for one test (dropped after it).
- ``sample_db``: one database per session with the Luohu sample loaded; treat it as read-only.
- ``settings_for(url)``: Settings pointing at a database.
- ``client``: a TestClient (lifespan running) over ``sample_db``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from geoservice.app import create_app
from geoservice.db.connection import connect, database_url
from geoservice.db.migrate import upgrade
from geoservice.settings import DatabaseSettings, Settings

FIXTURES = Path(__file__).parent / "fixtures"
_counter = itertools.count()


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def _create(server_url: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        conn.execute(query)
    return _with_db(server_url, name)


def _drop(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def unique_name(prefix: str = "smtest") -> str:
    """A database name no other test session uses."""
    return f"{prefix}_{os.getpid()}_{next(_counter)}"


@pytest.fixture(scope="session")
def server_url() -> str:
    """URL of a database on the PostGIS server the tests use (created databases live beside it)."""
    return database_url(DatabaseSettings(), start=True)


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    """Name of a migrated, empty database to copy."""
    name = unique_name("smtpl")
    url = _create(server_url, name)
    upgrade(url)
    yield name
    _drop(server_url, name)


@pytest.fixture(scope="session")
def make_db(server_url: str, template_db: str) -> Iterator[Callable[[], str]]:
    """Factory of fresh migrated databases (all dropped at the end of the session)."""
    made: list[str] = []

    def make() -> str:
        name = unique_name()
        made.append(name)
        return _create(server_url, name, template=template_db)

    yield make
    for name in made:
        _drop(server_url, name)


@pytest.fixture
def fresh_db(make_db: Callable[[], str]) -> str:
    """URL of an empty, migrated database for this test."""
    return make_db()


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Luohu sample written once per session."""
    from ingest.sample import write_sample

    out = tmp_path_factory.mktemp("sample")
    write_sample(out)
    return out


def load_sample(url: str, sample_dir: Path) -> None:
    """Load every sample layer file (and whatever the demo loads after it) into `url`."""
    from geoservice.cli import disclosures as cli_disclosures
    from ingest.pipeline import ingest_file
    from ingest.sample import COUNTS

    with connect(url) as conn:
        for layer in COUNTS:
            ingest_file(conn, sample_dir / f"{layer}.geojson", layer=layer, source="sample")
        for step in cli_disclosures.DEMO_STEPS:
            step(conn, sample_dir / "disclosures.json")


@pytest.fixture(scope="session")
def sample_db(make_db: Callable[[], str], sample_dir: Path) -> str:
    """URL of a database holding the sample district (shared by the session: do not mutate)."""
    url = make_db()
    load_sample(url, sample_dir)
    return url


def settings_for(url: str, **service: Any) -> Settings:
    """Settings pointing at `url`, with optional service overrides."""
    settings = Settings(db=DatabaseSettings(DATABASE_URL=url))
    if service:
        settings.service = settings.service.model_copy(update=service)
    return settings


@pytest.fixture
def client(sample_db: str) -> Iterator[TestClient]:
    """A client of the app over the sample database, lifespan running."""
    with TestClient(create_app(settings_for(sample_db))) as test_client:
        yield test_client
