"""Faults: the database restarts in the middle of a sensor stream (on a throwaway cluster).

While the database is down the service answers 503 and keeps running; once it is back the
same process stores again; every reading it acknowledged with a 2xx is stored, exactly once.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from fastapi.testclient import TestClient

from geoservice.app import create_app
from geoservice.db.cluster import Cluster
from geoservice.db.connection import connect
from geoservice.db.migrate import upgrade
from geoservice.settings import DatabaseSettings
from geoservice.toilets.admin import add_device
from tests.geoservice.toilet_support import add_facilities, auth, reading, stored, toilet_settings
from tests.servers import free_port

URL = "/api/v1/sensors/readings"


def test_database_restart_mid_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    cluster = Cluster(DatabaseSettings(data_dir=tmp_path / "pg", port=free_port(), name="faults"))
    url = cluster.up()
    try:
        upgrade(url)
        add_facilities(url)
        with connect(url, autocommit=True) as conn:
            device_id, token = add_device(conn, "toilet-a", 2)
        settings = toilet_settings(url, device_rate_per_s=1000, device_burst=1000)
        settings.db = settings.db.model_copy(update={"pool_timeout_s": 1.0})
        acknowledged: set[int] = set()
        statuses: list[int] = []
        start = datetime.now(UTC) - timedelta(minutes=5)
        with TestClient(create_app(settings)) as client:

            def send(seqs: list[int]) -> int:
                body = {"readings": [reading(s, start + timedelta(seconds=s)) for s in seqs]}
                answer = client.post(URL, content=orjson.dumps(body), headers=auth(token))
                statuses.append(answer.status_code)
                if 200 <= answer.status_code < 300:
                    acknowledged.update(seqs)
                else:
                    assert answer.status_code == 503, answer.text
                    assert "Retry-After" in answer.headers
                return answer.status_code

            for seq in range(0, 20, 2):
                assert send([seq, seq + 1]) == 200
            cluster.down()
            down = [send([seq, seq + 1]) for seq in range(20, 30, 2)]
            assert set(down) == {503}
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 503
            cluster.up()
            # the sensor retries what was refused, then carries on; the process was not restarted
            deadline = time.monotonic() + 60
            pending = list(range(20, 60, 2))
            while pending and time.monotonic() < deadline:
                if send([pending[0], pending[0] + 1]) == 200:
                    pending.pop(0)
                else:
                    time.sleep(0.5)
            assert not pending, f"not recovered: {statuses[-5:]}"
            # replaying everything acknowledged stores nothing more
            everything = sorted(acknowledged)
            replay = client.post(
                URL,
                content=orjson.dumps(
                    {"readings": [reading(s, start + timedelta(seconds=s)) for s in everything]}
                ),
                headers=auth(token),
            )
            assert replay.json() == {"accepted": 0, "duplicates": len(everything)}
        assert 503 in statuses
        assert acknowledged == set(range(60))
        assert stored(url, device_id) == sorted(acknowledged)
    finally:
        root = cluster.root
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)
