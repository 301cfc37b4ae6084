"""The smart-toilet commands: devices, staff, readings prune, simulate-sensors."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import uvicorn
from typer.testing import CliRunner

from geoservice.app import create_app
from geoservice.cli.main import app
from geoservice.db.connection import connect
from geoservice.toilets.admin import parse_duration, reading_partitions
from geoservice.toilets.simulator import ToiletSim, stall_count
from tests.geoservice.toilet_support import add_facilities, stored, toilet_settings

runner = CliRunner()


@pytest.fixture
def cli_db(fresh_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    add_facilities(fresh_db)
    monkeypatch.setenv("DATABASE_URL", fresh_db)
    return fresh_db


def test_devices_add_list_revoke(cli_db: str) -> None:
    added = runner.invoke(app, ["devices", "add", "--facility", "toilet-a", "--stalls", "3"])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("smd_") and len(token) > 40
    with connect(cli_db) as conn:
        row = conn.execute("SELECT id, token_hash, stalls FROM toilet_devices").fetchone()
        stalls = conn.execute("SELECT count(*) AS n FROM toilet_stalls").fetchone()
    assert row is not None and token not in row["token_hash"] and row["stalls"] == 3
    assert stalls is not None and stalls["n"] == 3
    listed = runner.invoke(app, ["devices", "list"])
    assert listed.exit_code == 0 and "toilet-a" in listed.stdout and token not in listed.stdout
    revoked = runner.invoke(app, ["devices", "revoke", str(row["id"])])
    assert revoked.exit_code == 0
    assert runner.invoke(app, ["devices", "revoke", "999"]).exit_code != 0


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--facility", "nope"], "no facility"),
        (["--facility", "clinic-a"], "not a toilet"),
        (["--facility", "toilet-a", "--stalls", "500"], "--stalls"),
    ],
)
def test_devices_add_refuses_clearly(cli_db: str, args: list[str], reason: str) -> None:
    result = runner.invoke(app, ["devices", "add", *args])
    assert result.exit_code != 0
    assert reason in result.output


def test_staff_add_list_revoke(cli_db: str) -> None:
    added = runner.invoke(app, ["staff", "add", "--name", "Zhang Wei"])
    assert added.exit_code == 0
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("sms_")
    again = runner.invoke(app, ["staff", "add", "--name", "Zhang Wei"])
    assert again.exit_code != 0 and "revoke" in again.output
    listed = runner.invoke(app, ["staff", "list"])
    assert "Zhang Wei" in listed.stdout and token not in listed.stdout
    assert runner.invoke(app, ["staff", "revoke", "Zhang Wei"]).exit_code == 0
    # a revoked name can be given a new token
    renewed = runner.invoke(app, ["staff", "add", "--name", "Zhang Wei"])
    assert renewed.exit_code == 0 and renewed.stdout.strip().splitlines()[-1] != token
    assert runner.invoke(app, ["staff", "revoke", "Nobody"]).exit_code != 0


def test_readings_prune_drops_old_months_and_keeps_recent(cli_db: str) -> None:
    with connect(cli_db, autocommit=True) as conn:
        conn.execute("SELECT toilet_readings_ensure_partition((now() - interval '500 days')::date)")
        device = conn.execute(
            "INSERT INTO toilet_devices (facility_id, token_hash) VALUES ('toilet-a', 'x')"
            " RETURNING id"
        ).fetchone()
        assert device is not None
        old = datetime.now(UTC) - timedelta(days=500)
        recent = datetime.now(UTC) - timedelta(days=1)
        for seq, at in ((1, old), (2, recent)):
            conn.execute(
                "INSERT INTO toilet_readings (device_id, seq, facility_id, observed_at)"
                " VALUES (%s, %s, 'toilet-a', %s)",
                (device["id"], seq, at),
            )
        before = len(reading_partitions(conn))
    too_short = runner.invoke(app, ["readings", "prune", "--older-than", "2d"])
    assert too_short.exit_code != 0 and "horizon" in too_short.output
    assert runner.invoke(app, ["readings", "prune", "--older-than", "soon"]).exit_code != 0
    result = runner.invoke(app, ["readings", "prune", "--older-than", "400d"])
    assert result.exit_code == 0, result.output
    with connect(cli_db) as conn:
        after = len(reading_partitions(conn))
    assert after == before - 1
    assert stored(cli_db, int(device["id"])) == [2]


def test_parse_duration() -> None:
    assert parse_duration("400d") == timedelta(days=400)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("30") == timedelta(days=30)


def test_simulated_toilet_behaves_like_one() -> None:
    import random

    sim = ToiletSim([str(i) for i in range(1, 5)], random.Random(3))
    start = datetime(2024, 5, 6, 4, 0, tzinfo=UTC)  # 12:00 in Shenzhen: lunch peak
    readings = [sim.step(start + timedelta(seconds=30 * i)) for i in range(240)]
    assert [r["seq"] for r in readings] == list(range(240))
    entries = sum(r["people_count"] for r in readings)
    assert 50 < entries < 800
    occupied = [sum(s["occupied"] for s in r["stalls"]) for r in readings]
    assert max(occupied) >= 1 and min(occupied) == 0
    assert readings[-1]["battery_pct"] < 100
    assert stall_count({"stalls_male": 3, "stalls_female": 4}) == 7
    assert stall_count({}) == 4


@pytest.fixture
def server(cli_db: str) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(toilet_settings(cli_db)), log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_simulate_sensors_posts_through_the_api(cli_db: str, server: str) -> None:
    result = runner.invoke(
        app,
        [
            "simulate-sensors", "--toilets", "2", "--interval", "0.2", "--duration", "1.5",
            "--url", server,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "simulated sensors" in result.stdout
    with connect(cli_db) as conn:
        readings = conn.execute("SELECT count(*) AS n FROM toilet_readings").fetchone()
        live = conn.execute(
            "SELECT count(*) AS n FROM toilet_devices WHERE revoked_at IS NULL"
        ).fetchone()
    assert readings is not None and readings["n"] >= 4
    assert live is not None and live["n"] == 0  # the simulator revokes its devices on exit
