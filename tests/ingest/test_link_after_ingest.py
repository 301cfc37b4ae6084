"""`servicemap ingest` re-links disclosures, counts H3 cells and analyses when anything changed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from geoservice.cli.ingest import PLANNED_COLUMNS


def servicemap(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geoservice.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": url, "COLUMNS": "200"},
        timeout=300,
    )


def test_ingest_links_new_facilities(fresh_db: str, sample_dir: Path) -> None:
    catalogue = servicemap("ingest-disclosures", str(sample_dir / "disclosures.json"), url=fresh_db)
    assert catalogue.returncode == 0, catalogue.stderr
    first = servicemap(
        "ingest", str(sample_dir / "school.geojson"), "--layer", "school", "--source", "sample",
        url=fresh_db,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "links: +" in first.stderr
    with psycopg.connect(fresh_db) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT l.facility_id) FROM facility_matter_links l "
            "JOIN facilities f ON f.id = l.facility_id WHERE f.layer = 'school'"
        ).fetchone()
        pending = conn.execute("SELECT count(*) FROM h3_pending").fetchone()
        counted = conn.execute(
            "SELECT sum(count) FROM h3_counts WHERE resolution = 0 AND layer = 'school'"
        ).fetchone()
        schools = conn.execute("SELECT count(*) FROM facilities WHERE layer = 'school'").fetchone()
    assert row is not None and row[0] > 0
    # the H3 cells are counted by the command, not left to the first map request
    assert pending == (0,) and schools is not None and schools[0] > 100
    assert counted == schools
    # the planner knows the load: statistics of the columns the queries plan on
    with psycopg.connect(fresh_db) as conn:
        analysed = conn.execute(
            "SELECT attname FROM pg_stats WHERE tablename = 'facilities'"
        ).fetchall()
        plan = conn.execute(
            "EXPLAIN (FORMAT JSON) SELECT * FROM facilities WHERE layer = 'school'"
        ).fetchone()
    assert set(PLANNED_COLUMNS) <= {name for (name,) in analysed}
    assert plan is not None and plan[0][0]["Plan"]["Plan Rows"] == schools[0]
    again = servicemap(
        "ingest", str(sample_dir / "school.geojson"), "--layer", "school", "--source", "sample",
        url=fresh_db,
    )  # fmt: skip
    assert again.returncode == 0 and "links:" not in again.stderr
