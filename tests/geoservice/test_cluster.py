"""The embedded cluster: created on demand, started twice harmlessly, recovered after a crash."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import psycopg

from geoservice.db.cluster import Cluster
from geoservice.db.connection import check_database
from geoservice.settings import DatabaseSettings
from tests.servers import free_port


def test_lifecycle_and_crash_recovery(tmp_path: Path) -> None:
    cluster = Cluster(
        DatabaseSettings(data_dir=tmp_path / "pg", port=free_port(), name="lifecycle")
    )
    # as root, a data dir the postgres account cannot reach moves to that account's home
    root = cluster.root
    url = cluster.up()
    try:
        assert check_database(url).startswith("3.")
        assert (root / "password").stat().st_mode & 0o777 == 0o600
        assert cluster.up() == url  # starting twice is harmless
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (1)")
        # a crash: the postmaster dies hard, leaving its pid file behind
        pid = int((root / "data" / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                time.sleep(0.2)
            except ProcessLookupError:
                break
        assert (root / "data" / "postmaster.pid").exists()
        assert cluster.up() == url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (1,)
    finally:
        cluster.down()
    assert not cluster.down()
    shutil.rmtree(root)
