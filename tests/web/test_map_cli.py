"""`servicemap map`: the standalone file, and clear failures."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

SERVICEMAP = str(Path(sys.executable).parent / "servicemap")


def _run(args: list[str], database: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SERVICEMAP, *args],
        env={**os.environ, "DATABASE_URL": database},
        capture_output=True,
        text=True,
    )


def test_standalone_file_carries_everything(sample_db: str, tmp_path: Path):
    out = tmp_path / "share" / "map.html"
    done = _run(["map", "--out", str(out), "--lang", "zh-Hant"], sample_db)
    assert done.returncode == 0, done.stderr
    html = out.read_text(encoding="utf-8")
    assert '<html lang="zh-Hant">' in html
    # inlined: no reference to the app's static routes or any other site's scripts
    assert "/static/" not in html and "<script src" not in html and "<link rel" not in html
    assert "L.markerClusterGroup" in html and '"rows":[[' in html
    assert "images/layers.png" not in html
    assert not list(out.parent.glob(".*partial"))


def test_unknown_layer_and_language_fail_clearly(sample_db: str, tmp_path: Path):
    out = tmp_path / "map.html"
    done = _run(["map", "--out", str(out), "--layer", "zoo"], sample_db)
    assert done.returncode != 0
    assert "zoo" in done.stderr and "toilet" in done.stderr
    done = _run(["map", "--out", str(out), "--lang", "fr"], sample_db)
    assert done.returncode != 0 and "zh-Hans" in done.stderr
    assert not out.exists()


async def _export_both_ways(database: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the standalone file's table, the same table with each facility's documents read one
    facility at a time through the facility API's own disclosure query)."""
    import layers
    from geoservice.db.connection import libpq_url
    from geoservice.disclosures.routes import facility_disclosures
    from tests.conftest import settings_for
    from web.map import DISCLOSURES_PER_STAGE, embedded_data

    settings = settings_for(database)
    keys = list(layers.all_layers())
    async with await psycopg.AsyncConnection.connect(
        libpq_url(database), row_factory=dict_row, autocommit=True
    ) as conn:
        data = await embedded_data(conn, settings, keys, generated_at="now")
        documents: dict[str, list[Any]] = {}
        doc_lists = []
        for row in data["rows"]:
            groups = await facility_disclosures(conn, row[0])
            doc_ids = []
            for category, docs in groups.items():
                newest = sorted(docs, key=lambda d: d["published_at"] or "", reverse=True)
                for doc in newest[:DISCLOSURES_PER_STAGE]:
                    documents.setdefault(
                        str(doc["id"]),
                        [doc["title"], doc["url"], doc["published_at"] or "", category],
                    )
                    doc_ids.append(str(doc["id"]))
            doc_lists.append(doc_ids)
    rows = [[*row[:-1], docs] for row, docs in zip(data["rows"], doc_lists, strict=True)]
    expected = {**data, "rows": rows, "documents": documents}
    return data, expected


def test_standalone_disclosures_are_each_facilitys_newest(sample_db: str):
    # a thread of its own: the browser tests' Playwright may own this thread's event loop
    with ThreadPoolExecutor(1) as pool:
        data, expected = pool.submit(asyncio.run, _export_both_ways(sample_db)).result()
    assert any(row[-1] for row in data["rows"]) and len(data["documents"]) > 10
    # the same documents per facility, in the same order, and the same table in the same order
    assert data["rows"] == expected["rows"]
    assert list(data["documents"].items()) == list(expected["documents"].items())
