"""The bulk path (a large first load into an empty table) stores exactly what the incremental
path stores, leaves the schema exactly as the migrations made it, and stays atomic."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h3
import pandas as pd
import psycopg
import pytest
from psycopg.rows import dict_row

from geoservice.db.connection import connect
from geoservice.query.h3sync import sync_cells
from ingest import load
from ingest.mapping import Mapping
from ingest.pipeline import IngestFailed, IngestOptions, run_ingest
from ingest.sample import write_scaled
from tests.ingest.conftest import Ingest
from tests.ingest.util import checksum, rows

ROWS = 3_000

#: the stored rows, without the timestamps a load sets
FACILITY_ROWS = """
SELECT id, layer, name, name_en, address, phone, website, opening_hours, opening_hours_raw,
       accessible, status, status_reason, source, source_id, attributes::text AS attributes,
       ST_AsEWKT(geom) AS geom, ST_AsEWKT(footprint) AS footprint, h3_15, content_hash,
       verified_at
FROM facilities ORDER BY id
"""

SCHEMA = {
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'facilities' "
    "ORDER BY indexname",
    "constraints": "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
    "WHERE conrelid = 'facilities'::regclass ORDER BY conname",
    "triggers": "SELECT tgname, tgenabled::text AS enabled FROM pg_trigger "
    "WHERE tgrelid = 'facilities'::regclass AND NOT tgisinternal ORDER BY tgname",
    "h3_counts": "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
    "WHERE conrelid = 'h3_counts'::regclass ORDER BY conname",
}

#: what the H3 tables hold (the queue, the counts)
H3_STATE = {
    "queued": "SELECT facility_id FROM h3_pending ORDER BY 1",
    "counts": "SELECT resolution, layer, cell, count FROM h3_counts ORDER BY 1, 2, 3",
}

#: the object ids of the table's indexes: a bulk load re-creates them (new ids)
INDEX_OIDS = """
SELECT c.relname AS name, c.oid::bigint AS oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'facilities'::regclass ORDER BY 1
"""


NEAR = """
SELECT id FROM facilities
WHERE ST_DWithin(geom::geography, ST_MakePoint(114.12, 22.55)::geography, 300) ORDER BY id
"""
NEAREST = """
SELECT id FROM facilities WHERE layer = 'toilet'
ORDER BY geom <-> ST_SetSRID(ST_MakePoint(114.12, 22.55), 4326) LIMIT 5
"""


@pytest.fixture(scope="module")
def scale_gpkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scaled(tmp_path_factory.mktemp("bulk"), ROWS)["gpkg"]


@pytest.fixture
def bulk_loads(monkeypatch: pytest.MonkeyPatch) -> list[load.BulkLoad | None]:
    """Make a few thousand rows a bulk load; what each load's `begin_bulk` decided."""
    monkeypatch.setattr(load, "BULK_LOAD_MIN_ROWS", 100)
    decided: list[load.BulkLoad | None] = []
    begin_bulk = load.begin_bulk

    def spy(*args: Any, **kwargs: Any) -> load.BulkLoad | None:
        decided.append(begin_bulk(*args, **kwargs))
        return decided[-1]

    monkeypatch.setattr(load, "begin_bulk", spy)
    return decided


def _schema(url: str) -> dict[str, list[dict[str, Any]]]:
    return {name: rows(url, query) for name, query in SCHEMA.items()}


def _index_oids(url: str) -> dict[str, int]:
    return {r["name"]: r["oid"] for r in rows(url, INDEX_OIDS)}


def _queued(url: str) -> list[str]:
    return [r["facility_id"] for r in rows(url, "SELECT facility_id FROM h3_pending ORDER BY 1")]


def _synced(url: str) -> dict[str, list[dict[str, Any]]]:
    """The H3 tables once geoservice.query.h3sync.sync_cells has handled whatever is queued."""

    async def sync() -> None:
        conn = await psycopg.AsyncConnection.connect(url, row_factory=dict_row, autocommit=True)
        async with conn:
            while await sync_cells(conn) > 0:
                pass

    asyncio.run(sync())
    return {name: rows(url, query) for name, query in H3_STATE.items()}


def h3_expected(url: str) -> Counter[tuple[int, str, int]]:
    """The live facilities counted per (resolution, layer, cell) of h3's own cells, 0-10."""
    counts: Counter[tuple[int, str, int]] = Counter()
    query = "SELECT layer, status, ST_Y(geom) AS lat, ST_X(geom) AS lon FROM facilities"
    for row in rows(url, query):
        if row["status"] != "removed":
            counts.update(
                (r, row["layer"], h3.str_to_int(h3.latlng_to_cell(row["lat"], row["lon"], r)))
                for r in range(11)
            )
    return counts


def assert_h3_exact(url: str) -> None:
    """h3_counts holds exactly h3's cells of the stored facilities, counted."""
    counted = {
        (r["resolution"], r["layer"], r["cell"]): r["count"] for r in rows(url, H3_STATE["counts"])
    }
    assert counted == dict(h3_expected(url))


def _load(ingest: Ingest, url: str, path: Path, **options: Any) -> Any:
    return ingest(url, path, layer_field="layer", source="scale", **options)


def test_bulk_load_stores_what_the_incremental_load_stores(
    make_db: Callable[[], str],
    ingest: Ingest,
    tmp_path: Path,
    scale_gpkg: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    incremental, staged, bulk = make_db(), make_db(), make_db()
    schema, oids = _schema(bulk), _index_oids(bulk)

    # incremental: COPYed straight in, every index maintained row by row
    report = _load(ingest, incremental, scale_gpkg)
    assert (report.inserted, report.rejected) == (ROWS, 0)
    assert _index_oids(incremental) == oids
    # staged: the source has facilities already, so the file goes through the upsert
    head = tmp_path / "head.csv"
    pd.read_csv(scale_gpkg.with_suffix(".csv"), dtype=str).head(10).to_csv(head, index=False)
    _load(ingest, staged, head, x="lon", y="lat")
    report = _load(ingest, staged, scale_gpkg)
    assert (report.inserted, report.unchanged) == (ROWS - 10, 10)
    # bulk: indexes built once at the end
    monkeypatch.setattr(load, "BULK_LOAD_MIN_ROWS", 100)
    report = _load(ingest, bulk, scale_gpkg)
    assert (report.inserted, report.rejected) == (ROWS, 0)

    # the bulk path did run: every secondary index and the unique constraint were rebuilt...
    rebuilt = {name for name, oid in _index_oids(bulk).items() if oids[name] != oid}
    assert rebuilt == set(oids) - {"facilities_pkey"}
    # ...and put back exactly as the migrations define them, the H3 trigger enabled again
    assert _schema(bulk) == _schema(incremental) == _schema(staged) == schema
    assert rows(bulk, FACILITY_ROWS) == rows(incremental, FACILITY_ROWS)
    assert rows(bulk, FACILITY_ROWS) == rows(staged, FACILITY_ROWS)
    # the bulk load counted the H3 cells itself: nothing queued, exactly what the
    # queue and sync_cells give the other paths
    assert _queued(bulk) == [] and len(_queued(incremental)) == ROWS
    assert _synced(bulk) == _synced(incremental) == _synced(staged)
    assert_h3_exact(bulk)
    # the rebuilt indexes answer what the maintained ones answer
    for query in (NEAR, NEAREST):
        assert rows(bulk, query) == rows(incremental, query)

    # re-ingesting the unchanged file writes nothing on any path's store
    for url in (bulk, incremental, staged):
        again = _load(ingest, url, scale_gpkg, chunk_rows=700)
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, ROWS)


def test_invalid_row_on_the_bulk_path_leaves_the_store_unchanged(
    fresh_db: str,
    ingest: Ingest,
    tmp_path: Path,
    scale_gpkg: Path,
    bulk_loads: list[load.BulkLoad | None],
) -> None:
    frame = pd.read_csv(scale_gpkg.with_suffix(".csv"), dtype=str)
    frame.loc[ROWS - 10, "lon"] = "east"  # one bad row near the end: after most were written
    broken = tmp_path / "broken.csv"
    frame.to_csv(broken, index=False)
    schema, oids, before = _schema(fresh_db), _index_oids(fresh_db), checksum(fresh_db)

    with pytest.raises(IngestFailed) as failed:
        _load(ingest, fresh_db, broken, x="lon", y="lat", chunk_rows=500)
    report = failed.value.report
    assert report.rejected == 1
    assert bulk_loads[0] is not None and bulk_loads[0].indexes and bulk_loads[0].index_h3
    assert [(i.row, i.reason) for i in report.error_issues] == [(ROWS - 8, "not a number")]
    assert checksum(fresh_db) == before
    assert _schema(fresh_db) == schema and _index_oids(fresh_db) == oids
    assert _synced(fresh_db) == {"queued": [], "counts": []}

    dry = _load(ingest, fresh_db, scale_gpkg, dry_run=True)
    assert (dry.outcome, dry.inserted) == ("dry_run", ROWS)
    assert bulk_loads[1] is not None
    assert checksum(fresh_db) == before
    assert _schema(fresh_db) == schema and _index_oids(fresh_db) == oids


def test_no_bulk_load_when_the_table_holds_facilities(
    fresh_db: str,
    ingest: Ingest,
    scale_gpkg: Path,
    sample_dir: Path,
    bulk_loads: list[load.BulkLoad | None],
) -> None:
    ingest(fresh_db, sample_dir / "toilet.geojson", layer="toilet", source="sample")
    oids = _index_oids(fresh_db)
    report = _load(ingest, fresh_db, scale_gpkg)
    assert report.inserted == ROWS
    assert bulk_loads[-1] is None  # (the sample, into the empty table, was one)
    # readers of the sample's toilets were never locked out: the indexes were kept
    assert _index_oids(fresh_db) == oids


def test_bulk_load_with_facilities_already_queued_for_h3(
    fresh_db: str, ingest: Ingest, scale_gpkg: Path, bulk_loads: list[load.BulkLoad | None]
) -> None:
    # a deleted facility's cells not yet recounted: the queue is not empty, so the load keeps
    # the trigger (which merges with what is queued) rather than writing cells itself
    with_deleted = rows(
        fresh_db, "INSERT INTO h3_pending (facility_id) VALUES ('deleted') RETURNING facility_id"
    )
    assert with_deleted
    oids = _index_oids(fresh_db)
    triggers = rows(fresh_db, SCHEMA["triggers"])
    report = _load(ingest, fresh_db, scale_gpkg)
    assert report.inserted == ROWS
    assert bulk_loads[0] is not None and not bulk_loads[0].index_h3
    assert _index_oids(fresh_db)["facilities_geom_idx"] != oids["facilities_geom_idx"]
    stored = [r["id"] for r in rows(fresh_db, "SELECT id FROM facilities")]
    assert sorted(_queued(fresh_db)) == sorted([*stored, "deleted"])
    # every trigger (H3 queue, residents' events) is there and enabled again after the load
    names = {t["tgname"] for t in triggers}
    assert {"facilities_h3_delete", "facilities_h3_insert", "facilities_h3_update"} <= names
    assert rows(fresh_db, SCHEMA["triggers"]) == triggers
    assert all(t["enabled"] == "O" for t in triggers)


def test_a_reader_holding_the_table_makes_it_an_ordinary_load(
    fresh_db: str, ingest: Ingest, scale_gpkg: Path, bulk_loads: list[load.BulkLoad | None]
) -> None:
    oids = _index_oids(fresh_db)
    with psycopg.connect(fresh_db) as reader:
        # a reader in the middle of a transaction that read facilities: its share lock stays
        reader.execute("SELECT count(*) FROM facilities").fetchone()
        report = _load(ingest, fresh_db, scale_gpkg)
        assert report.inserted == ROWS
        assert bulk_loads == [None]  # no waiting for the reader: indexes kept, rows COPYed in
        reader.rollback()
    assert _index_oids(fresh_db) == oids
    assert len(rows(fresh_db, FACILITY_ROWS)) == len(_queued(fresh_db)) == ROWS


def test_a_large_first_load_indexes_h3_exactly(
    fresh_db: str, ingest: Ingest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """50,000 generated facilities, a bulk load as any user's: h3's own cells, exact counts."""
    large = write_scaled(tmp_path_factory.mktemp("large"), load.BULK_LOAD_MIN_ROWS)["gpkg"]
    report = _load(ingest, fresh_db, large)
    assert (report.inserted, report.rejected) == (load.BULK_LOAD_MIN_ROWS, 0)
    assert _queued(fresh_db) == []
    assert_h3_exact(fresh_db)
    # some facility removed later: the trigger (enabled again) queues it, the sync recounts it
    with psycopg.connect(fresh_db) as conn:
        conn.execute(
            "UPDATE facilities SET status = 'removed' WHERE id IN "
            "(SELECT id FROM facilities ORDER BY id LIMIT 7)"
        )
    assert len(_queued(fresh_db)) == 7
    before = _synced(fresh_db)
    assert_h3_exact(fresh_db)
    # re-ingesting the unchanged file writes nothing, H3 tables included
    again = _load(ingest, fresh_db, large)
    assert (again.inserted, again.updated) == (0, 0)
    assert _synced(fresh_db) == before


def test_an_interrupted_bulk_load_puts_everything_back(
    fresh_db: str, scale_gpkg: Path, bulk_loads: list[load.BulkLoad | None]
) -> None:
    """Stopped half-way (Ctrl-C): indexes, keys and triggers as before, nothing stored."""
    schema, oids, before = _schema(fresh_db), _index_oids(fresh_db), checksum(fresh_db)

    def interrupt(done: int, total: int | None) -> None:
        if done > ROWS // 2:
            raise KeyboardInterrupt

    options = IngestOptions(mapping=Mapping(layer_field="layer", source="scale"), chunk_rows=500)
    with connect(fresh_db) as conn, pytest.raises(KeyboardInterrupt):
        run_ingest(conn, scale_gpkg, options, interrupt)
    assert bulk_loads[0] is not None and bulk_loads[0].index_h3
    assert checksum(fresh_db) == before
    assert _schema(fresh_db) == schema and _index_oids(fresh_db) == oids
    assert _synced(fresh_db) == {"queued": [], "counts": []}
