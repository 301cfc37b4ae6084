"""The H3 counting process: the same counts as counting in the load's own process, a clear
error when it dies, and never left running, however the load ends."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from geoservice.db.connection import connect
from ingest import h3cells, load
from ingest.h3tally import NICENESS, TallyProcess
from ingest.mapping import Mapping
from ingest.pipeline import IngestFailed, IngestOptions, run_ingest
from tests.ingest.test_bulk import ROWS, assert_h3_exact, scale_gpkg

__all__ = ["scale_gpkg"]  # the module's fixture: a GeoPackage of ROWS facilities


def _points(n: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(3)
    lat = np.degrees(np.arcsin(rng.uniform(-0.99, 0.99, n)))  # the whole globe
    lon = rng.uniform(-180, 180, n)
    layers = np.array(["toilet", "school", "学校"], dtype=object)[rng.integers(0, 3, n)]
    return lat, lon, layers, rng.random(n) > 0.1


def test_the_process_counts_what_the_load_would() -> None:
    lat, lon, layers, live = _points(30_000)
    here, there = h3cells.Tally(), TallyProcess()
    for start in range(0, len(lat), 7_000):
        part = slice(start, start + 7_000)
        here.add(h3cells.counts_of(lat[part], lon[part], layers[part], live[part]))
        there.add_points(lat[part], lon[part], layers[part], live[part])
    mine, theirs = here.counts, there.result()
    assert len(mine) > 30_000
    for name in ("resolution", "layer", "cell", "count"):
        assert (getattr(mine, name) == getattr(theirs, name)).all(), name
    # nothing counted: an empty answer
    assert len(TallyProcess().result()) == 0


def test_the_process_yields_the_cores_to_the_load() -> None:
    """It runs NICENESS below the load, so the load and its backend go first."""
    tally = TallyProcess()
    try:
        pid = tally._running().pid
        for _ in range(200):  # the worker lowers its priority as it starts
            # /proc/PID/stat: field 19 is the nice value (after the parenthesised name)
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            if int(fields[16]) == os.nice(0) + NICENESS:
                break
            time.sleep(0.05)
        assert int(fields[16]) == os.nice(0) + NICENESS
    finally:
        tally.close()


def test_a_dead_process_is_a_clear_error() -> None:
    tally = TallyProcess()
    process = tally._process
    assert process is not None
    process.kill()
    process.wait()
    lat, lon, layers, live = _points(50_000)  # more than a pipe holds
    with pytest.raises(RuntimeError, match="H3 counting process"):
        tally.add_points(lat, lon, layers, live)
        tally.result()
    tally.close()


@pytest.fixture
def tallies(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every counting process the loads start (a bulk load from 100 rows on)."""
    started: list[Any] = []

    class Recorded(TallyProcess):
        def __init__(self) -> None:
            super().__init__()
            assert self._process is not None
            self.popen = self._process  # kept after close() lets it go
            started.append(self)

    monkeypatch.setattr(load, "BULK_LOAD_MIN_ROWS", 100)
    monkeypatch.setattr(load, "TallyProcess", Recorded)
    return started


def test_a_bulk_load_counts_in_the_process_exactly(
    fresh_db: str, scale_gpkg: Path, tallies: list[Any]
) -> None:
    options = IngestOptions(mapping=Mapping(layer_field="layer", source="scale"), chunk_rows=700)
    with connect(fresh_db) as conn:
        report = run_ingest(conn, scale_gpkg, options)
    assert report.inserted == ROWS
    assert len(tallies) == 1 and tallies[0].popen.returncode == 0
    assert_h3_exact(fresh_db)


@pytest.mark.parametrize("stop", ["interrupt", "bad row"])
def test_the_process_stops_with_the_load(
    fresh_db: str,
    scale_gpkg: Path,
    tmp_path: Path,
    tallies: list[Any],
    stop: str,
) -> None:
    path = scale_gpkg
    if stop == "bad row":
        frame = pd.read_csv(scale_gpkg.with_suffix(".csv"), dtype=str)
        frame.loc[ROWS - 10, "lon"] = "east"
        path = tmp_path / "broken.csv"
        frame.to_csv(path, index=False)
    mapping = Mapping(layer_field="layer", source="scale", x="lon", y="lat")
    if stop == "interrupt":
        mapping = Mapping(layer_field="layer", source="scale")

    def interrupt(done: int, total: int | None) -> None:
        if stop == "interrupt" and done > ROWS // 2:
            raise KeyboardInterrupt

    options = IngestOptions(mapping=mapping, chunk_rows=500)
    with connect(fresh_db) as conn:
        if stop == "interrupt":
            with pytest.raises(KeyboardInterrupt):
                run_ingest(conn, path, options, interrupt)
        else:
            with pytest.raises(IngestFailed):
                run_ingest(conn, path, options, interrupt)
    assert len(tallies) == 1
    popen = tallies[0].popen
    assert tallies[0]._process is None and popen.returncode is not None
