"""A GDAL or GeoParquet file's first chunk is small (the load starts on it), the rest full size,
and together they are every row of the file once."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from ingest.readers import CHUNK_ROWS, FIRST_CHUNK_ROWS, open_source

ROWS = 2 * CHUNK_ROWS + FIRST_CHUNK_ROWS + 123


def _frame() -> gpd.GeoDataFrame:
    numbers = np.arange(ROWS)
    return gpd.GeoDataFrame(
        {"name": [f"公厕{n}" for n in numbers], "n": numbers},
        geometry=shapely.points(114.1 + numbers / 1e6, 22.55),
        crs="EPSG:4326",
    )


@pytest.mark.parametrize("suffix", [".gpkg", ".parquet", ".fgb"])
def test_first_chunk_small_then_full_chunks_of_every_row(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"toilets{suffix}"
    frame = _frame()
    if suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_file(path)
    chunks = list(open_source(path).chunks())
    sizes = [len(chunk.frame) for chunk in chunks]
    assert sizes == [
        FIRST_CHUNK_ROWS,
        CHUNK_ROWS,
        CHUNK_ROWS,
        ROWS - FIRST_CHUNK_ROWS - 2 * CHUNK_ROWS,
    ]
    assert np.concatenate([chunk.rows for chunk in chunks]).tolist() == list(range(1, ROWS + 1))
    # every row once (FlatGeobuf stores its features in its spatial index's order), each with
    # its own point
    values = np.concatenate([chunk.frame["n"].to_numpy() for chunk in chunks])
    assert sorted(values.tolist()) == list(range(ROWS))
    xy = np.concatenate([chunk.xy for chunk in chunks if chunk.xy is not None])
    assert len(xy) == ROWS and np.allclose(xy[:, 0], 114.1 + values / 1e6)


def test_chunks_smaller_than_the_first_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "toilets.gpkg"
    _frame().iloc[:1000].to_file(path)
    assert [len(chunk.frame) for chunk in open_source(path).chunks(300)] == [300, 300, 300, 100]
