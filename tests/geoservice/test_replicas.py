"""Reads on a streaming standby: a primary and a standby on loopback, made by the real CLI.

The primary is a cluster of this module's own (the shared test cluster holds every test
session's databases: copying it would take minutes); its standby is made with
``servicemap db replica add`` (pg_basebackup -R), listed and removed by the CLI too.

Which server answered a read is told by data only the primary has: the standby's replay is
paused (``pg_wal_replay_pause()``), a facility is renamed on the primary, and a read that
shows the old name came from the standby.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from geoservice.api.deps import PoolDep
from geoservice.app import create_app
from geoservice.cli.main import app as cli
from geoservice.db.cluster import Cluster, ensure_installed
from geoservice.db.connection import check_database, connect
from geoservice.db.migrate import upgrade
from geoservice.db.replicas import format_lsn, parse_lsn
from geoservice.db.standbys import Standbys
from geoservice.halls.setup import HallsFile, load_halls
from geoservice.settings import DatabaseSettings, Settings
from tests.conftest import load_sample
from tests.geoservice.halls_support import MATTER, OPEN_HALL, future_weekday_slot, setup_for_tests
from tests.servers import free_port

_names = itertools.count()


@dataclass
class Pair:
    """The primary, its standby, and how to reach them."""

    primary: Cluster
    standbys: Standbys
    primary_url: str
    standby_url: str
    env: dict[str, str]

    def sql(self, url: str, query: str, params: Any = None) -> Any:
        """One statement on a server; the first row, if any."""
        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchone() if cursor.description else None

    def pause(self) -> None:
        """Stop the standby replaying WAL (it keeps receiving it)."""
        self.sql(self.standby_url, "SELECT pg_wal_replay_pause()")

    def resume(self) -> None:
        """Let the standby replay again."""
        self.sql(self.standby_url, "SELECT pg_wal_replay_resume()")

    def rename(self, facility: str) -> str:
        """Give a facility a new name on the primary; the name."""
        name = f"renamed {next(_names)}"
        self.sql(
            self.primary_url, "UPDATE facilities SET name = %s WHERE id = %s", (name, facility)
        )
        return name

    def caught_up(self, timeout_s: float = 60) -> None:
        """Wait until the standby has replayed everything the primary has now."""
        (target,) = self.sql(self.primary_url, "SELECT pg_current_wal_lsn()::text")
        deadline = time.monotonic() + timeout_s
        while True:
            (replay,) = self.sql(self.standby_url, "SELECT pg_last_wal_replay_lsn()::text")
            if parse_lsn(replay) >= parse_lsn(target):
                return
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Iterator[Pair]:
    """A primary of our own with the sample district, and a standby of it made by the CLI."""
    settings = DatabaseSettings(
        data_dir=tmp_path_factory.mktemp("replicas") / "pg", port=free_port(), name="replicas"
    )
    primary = Cluster(settings)
    env = {"SERVICEMAP_DB_DATA_DIR": str(settings.data_dir), "SERVICEMAP_DB_PORT": str(settings.port),
           "SERVICEMAP_DB_NAME": settings.name, "DATABASE_URL": ""}  # fmt: skip
    runner = CliRunner()
    try:
        primary_url = primary.up()
        check_database(primary_url)
        upgrade(primary_url)
        load_sample(primary_url, sample_dir)
        with connect(primary_url) as conn:
            setup = [h for h in setup_for_tests() if h["facility"] == OPEN_HALL]
            load_halls(conn, HallsFile.model_validate({"halls": setup}))
        added = runner.invoke(cli, ["db", "replica", "add"], env=env)
        assert added.exit_code == 0, added.output
        standby_url = added.stdout.strip()
        assert standby_url.startswith("postgresql://") and standby_url.endswith("/replicas")
        pair = Pair(primary, Standbys(primary), primary_url, standby_url, env)
        pair.caught_up()
        yield pair
        removed = runner.invoke(cli, ["db", "replica", "remove", standby_url], env=env)
        assert removed.exit_code == 0, removed.output
        assert Standbys(primary).ports() == []
        slots = pair.sql(primary_url, "SELECT count(*) FROM pg_replication_slots")
        assert slots == (0,)
    finally:
        Standbys(primary).stop_all()
        primary.down()
        shutil.rmtree(primary.root, ignore_errors=True)


def replica_settings(pair: Pair, **db: Any) -> Settings:
    """Settings with the primary as DATABASE_URL and the standby for reads."""
    values = {
        "DATABASE_URL": pair.primary_url,
        "SERVICEMAP_DATABASE_READ_URLS": pair.standby_url,
        "replica_check_s": 0.2,
        **db,
    }
    return Settings(db=DatabaseSettings(**values))


@pytest.fixture
def reads(pair: Pair) -> Iterator[TestClient]:
    """An app reading from the standby (lag limit 60 s: a paused standby stays in use)."""
    app = create_app(replica_settings(pair, SERVICEMAP_MAX_REPLICA_LAG_S=60))
    with TestClient(app) as client:
        wait_for(client, "ok")
        yield client
    pair.resume()
    pair.caught_up()


def standby_status(client: TestClient) -> dict[str, Any]:
    """The standby as /readyz reports it."""
    body = client.get("/readyz").json()
    standby: dict[str, Any] = body["standbys"][0]
    return standby


def wait_for(client: TestClient, status: str, timeout_s: float = 30) -> dict[str, Any]:
    """Wait until /readyz reports the standby in `status`."""
    deadline = time.monotonic() + timeout_s
    while (standby := standby_status(client))["status"] != status:
        assert time.monotonic() < deadline, f"standby never {status}: {standby}"
        time.sleep(0.1)
    return standby


def name_of(client: TestClient, facility: str, **kwargs: Any) -> str:
    """The facility's name as a read sees it."""
    response = client.get(f"/api/v1/facilities/{facility}", **kwargs)
    assert response.status_code == 200, response.text
    name: str = response.json()["properties"]["name"]
    return name


@pytest.fixture(scope="module")
def toilets(pair: Pair) -> Callable[[], str]:
    """A different sample toilet on each call (one rating per client and facility)."""
    with psycopg.connect(pair.primary_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM facilities WHERE layer = 'toilet'")]
    return iter(ids).__next__


# --- the CLI ---------------------------------------------------------------------------------
def test_list_names_each_standby_with_its_url_and_lag(pair: Pair) -> None:
    result = CliRunner().invoke(cli, ["db", "replica", "list"], env=pair.env)
    assert result.exit_code == 0, result.output
    name, url, state, lag = result.stdout.strip().split("\t")
    assert name == f"standby-{pair.standbys.ports()[0]}" and url == pair.standby_url
    assert state == "streaming" and lag.startswith("lag ") and " s, " in lag
    urls = CliRunner().invoke(cli, ["db", "replica", "list", "--urls"], env=pair.env)
    assert urls.stdout.strip() == pair.standby_url
    unknown = CliRunner().invoke(cli, ["db", "replica", "remove", "standby-1"], env=pair.env)
    assert unknown.exit_code != 0 and "standby-" in unknown.output


# --- routing ---------------------------------------------------------------------------------
def test_reads_hit_the_standby_and_writes_the_primary(
    pair: Pair, reads: TestClient, toilets: Callable[[], str]
) -> None:
    facility = toilets()
    before = name_of(reads, facility)
    pair.pause()
    renamed = pair.rename(facility)
    # only the primary has the new name: every read came from the standby
    assert {name_of(reads, facility) for _ in range(20)} == {before}
    ready = reads.get("/readyz").json()
    assert ready["primary"]["status"] == "ok" and ready["standbys"][0]["status"] == "ok"
    # a write goes to the primary (a standby refuses writes) and says where it got to
    response = reads.post(f"/api/v1/facilities/{facility}/ratings", json={"score": 4})
    assert response.status_code == 201, response.text
    lsn = response.headers["servicemap-lsn"]
    assert format_lsn(parse_lsn(lsn)) == lsn
    assert "servicemap_lsn=" in response.headers["set-cookie"]
    assert "httponly" in response.headers["set-cookie"].lower()
    stored = "SELECT count(*) FROM facility_ratings WHERE facility_id = %s"
    assert pair.sql(pair.primary_url, stored, (facility,)) == (1,)
    pair.resume()
    pair.caught_up()
    assert name_of(reads, facility) == renamed


def test_a_client_reads_its_own_rating(
    pair: Pair, reads: TestClient, toilets: Callable[[], str]
) -> None:
    facility = toilets()
    pair.pause()
    response = reads.post(f"/api/v1/facilities/{facility}/ratings", json={"score": 5})
    assert response.status_code == 201
    lsn = response.headers["servicemap-lsn"]

    # the writer (its cookie) reads from the primary while the standby is behind its write
    own = reads.get(f"/api/v1/facilities/{facility}").json()["properties"]["rating"]
    assert own["count"] == 1 and own["average"] == 5.0
    # anyone else reads the standby, which has not replayed the rating yet
    reads.cookies.delete("servicemap_lsn")
    other = reads.get(f"/api/v1/facilities/{facility}").json()["properties"]["rating"]
    assert other["count"] == 0
    # an API client sending the marker as a header reads its write too
    headers = {"Servicemap-LSN": lsn}
    by_header = reads.get(f"/api/v1/facilities/{facility}", headers=headers).json()
    assert by_header["properties"]["rating"]["count"] == 1
    reads.cookies.set("servicemap_lsn", lsn)

    # once the standby has replayed past the write, the writer's reads go back to it
    pair.resume()
    deadline = time.monotonic() + 30
    while parse_lsn(standby_status(reads)["replay_lsn"] or "0/0") < parse_lsn(lsn):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    before = name_of(reads, facility)
    pair.pause()
    pair.rename(facility)
    assert name_of(reads, facility) == before  # the standby's (old) name: read from it


def test_a_client_reads_its_own_booking(pair: Pair, reads: TestClient) -> None:
    slot = future_weekday_slot(3)
    pair.pause()
    body = {"hall": OPEN_HALL, "matter": MATTER, "start": slot.isoformat(),
            "name": "陈小明", "phone": "13900001111"}  # fmt: skip
    booked = reads.post("/api/v1/appointments", json=body)
    assert booked.status_code == 201, booked.text
    code = booked.json()["code"]
    path = f"/api/v1/halls/{OPEN_HALL}/slots"
    params = {"matter": MATTER, "date": slot.date().isoformat()}

    def booked_at(**kwargs: Any) -> int:
        answer = reads.get(path, params=params, **kwargs)
        assert answer.status_code == 200, answer.text
        (found,) = [s for s in answer.json() if s["start"] == slot.isoformat()]
        return int(found["booked"])

    # the booker sees the slot taken at once: the standby has not replayed the booking yet
    assert booked_at() == 1
    assert reads.get(f"/api/v1/appointments/{code}").json()["status"] == "booked"
    reads.cookies.delete("servicemap_lsn")
    assert booked_at() == 0  # anyone else: the standby's view
    assert booked_at(headers={"Servicemap-LSN": booked.headers["servicemap-lsn"]}) == 1
    # cancelling is a write too: the canceller sees the place free again
    assert reads.delete(f"/api/v1/appointments/{code}").status_code in (200, 204)
    assert reads.get(f"/api/v1/appointments/{code}").json()["status"] == "cancelled"
    assert booked_at() == 0


def test_a_get_that_writes_is_answered_by_the_primary(pair: Pair, reads: TestClient) -> None:
    async def writes(pool: PoolDep) -> dict[str, int]:
        async with pool.connection() as conn:
            await conn.execute("CREATE TEMPORARY TABLE IF NOT EXISTS scratch (x int)")
            await conn.execute("INSERT INTO scratch VALUES (1)")
        return {"written": 1}

    assert isinstance(reads.app, FastAPI)
    reads.app.add_api_route("/test/writes", writes)
    assert reads.get("/test/writes").json() == {"written": 1}
    assert standby_status(reads)["status"] == "ok"  # not taken out: it is the route's fault


def test_a_standby_that_dies_costs_no_answer(pair: Pair, toilets: Callable[[], str]) -> None:
    # checks far apart: the router still counts the standby healthy when it dies
    app = create_app(replica_settings(pair, replica_check_s=30))
    port = pair.standbys.ports()[0]
    standby = pair.standbys.cluster(port)
    facility = toilets()
    with TestClient(app) as client:
        wait_for(client, "ok")
        for _ in range(5):  # the standby's pool holds open connections
            assert client.get(f"/api/v1/facilities/{facility}").status_code == 200
        binaries = ensure_installed()
        standby._run([binaries("pg_ctl"), "stop", "-D", str(standby.pgdata), "-m", "immediate"])
        answers = [client.get(f"/api/v1/facilities/{facility}").status_code for _ in range(20)]
        assert answers == [200] * 20
        assert standby_status(client)["status"] == "down"
        nearest = client.get("/api/v1/nearest", params={"lat": 22.55, "lon": 114.12})
        assert nearest.status_code == 200
        assert client.get("/readyz").status_code == 200  # the primary serves

        pair.standbys.start_all()
        deadline = time.monotonic() + 30
        while standby_status(client)["status"] != "ok":  # back once it has caught up
            assert time.monotonic() < deadline, standby_status(client)
            client.portal.call(app.state.replicas.check)  # type: ignore[union-attr]
            time.sleep(0.1)
        assert client.get(f"/api/v1/facilities/{facility}").status_code == 200
    pair.caught_up()


def test_a_lagging_standby_is_skipped_and_used_again(
    pair: Pair, toilets: Callable[[], str]
) -> None:
    app = create_app(replica_settings(pair, SERVICEMAP_MAX_REPLICA_LAG_S=2))
    facility = toilets()
    with TestClient(app) as client:
        wait_for(client, "ok")
        pair.pause()
        renamed = pair.rename(facility)
        lagging = wait_for(client, "lagging")
        assert lagging["lag_s"] > 2 and lagging["lag_bytes"] > 0
        # reads go to the primary, which has the new name
        assert name_of(client, facility) == renamed
        assert client.get("/readyz").status_code == 200

        pair.resume()
        wait_for(client, "ok")
        pair.pause()
        try:
            pair.rename(facility)
            assert name_of(client, facility) == renamed  # the standby's: used again
        finally:
            pair.resume()
    pair.caught_up()


def test_an_unreachable_standby_leaves_reads_on_the_primary(
    pair: Pair, toilets: Callable[[], str]
) -> None:
    settings = replica_settings(pair)
    dead = pair.standby_url.replace(f":{pair.standbys.ports()[0]}/", f":{free_port()}/")
    settings.db = settings.db.model_copy(update={"read_urls": (dead,)})
    with TestClient(create_app(settings)) as client:
        assert standby_status(client)["status"] == "down"
        facility = toilets()
        assert client.get(f"/api/v1/facilities/{facility}").status_code == 200
        assert (
            "servicemap-lsn"
            in client.post(f"/api/v1/facilities/{facility}/ratings", json={"score": 3}).headers
        )


def test_without_standbys_writes_carry_no_marker(pair: Pair, toilets: Callable[[], str]) -> None:
    settings = Settings(db=DatabaseSettings(DATABASE_URL=pair.primary_url))
    with TestClient(create_app(settings)) as client:
        facility = toilets()
        response = client.post(f"/api/v1/facilities/{facility}/ratings", json={"score": 3})
        assert response.status_code == 201 and "servicemap-lsn" not in response.headers
        assert client.get("/readyz").json()["standbys"] == []
