"""H3 cells of points, exactly as h3 computes them, column-wise.

The one place facilities' cells are computed: the load writes them (ingest.load, a bulk first
load) and the query side computes those of changed facilities (geoservice.query.h3.sync_cells).
H3 cells do not nest exactly: a coarse cell is not the parent of the resolution-15 cell for
about 6 % of points, so every resolution is computed by h3's own ``latlng_to_cell``.
"""

from __future__ import annotations

import itertools

import h3.api.basic_int as h3_int
import numpy as np

#: the resolutions a facility is counted at (facility_h3.cells[r + 1], h3_counts)
RESOLUTIONS = range(16)
#: the resolution stored with each facility (facilities.h3_15)
STORED_RESOLUTION = 15


def cells(lat: np.ndarray, lon: np.ndarray, resolution: int = STORED_RESOLUTION) -> np.ndarray:
    """H3 cells (as int64) of points at one resolution, exactly h3.latlng_to_cell."""
    return _cells_at(np.asarray(lat).tolist(), np.asarray(lon).tolist(), resolution)


def all_cells(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Each point's cell at every resolution (n × 16 int64; column r = resolution r)."""
    lats, lons = np.asarray(lat).tolist(), np.asarray(lon).tolist()
    table = np.empty((len(lats), len(RESOLUTIONS)), dtype=np.int64)
    for resolution in RESOLUTIONS:
        table[:, resolution] = _cells_at(lats, lons, resolution)
    return table


def _cells_at(lats: list[float], lons: list[float], resolution: int) -> np.ndarray:
    # h3's integer API: the same cells without making and parsing a million hex strings
    return np.fromiter(
        map(h3_int.latlng_to_cell, lats, lons, itertools.repeat(resolution)),
        dtype=np.int64,
        count=len(lats),
    )
