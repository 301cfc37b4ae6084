"""H3 cells of points, exactly as h3 computes them, column-wise.

The one place facilities' cells are computed: the load counts them (ingest.load, a bulk first
load), the query side counts those of changed facilities (geoservice.query.h3sync) and buckets
the finer resolutions on request (geoservice.query.h3). H3 cells do not nest exactly: a coarse
cell is not the parent of the resolution-15 cell for about 6 % of points, so every resolution is
computed by h3's own ``latlng_to_cell``.

Counts per cell are kept for the coarse resolutions only (``COUNTED``, h3_counts). From
resolution 11 on a cell holds about one facility even in a dense district, so a count per cell
would be a row per facility and resolution (4.7 a facility, filled and indexed on every load)
that says no more than the facilities themselves; those resolutions are bucketed from the
facilities in the requested box instead, whose size the hexagon limit keeps small.
"""

from __future__ import annotations

import itertools
from typing import Any

import h3.api.basic_int as h3_int
import numpy as np
import pandas as pd
import pyarrow as pa

#: the resolutions counted per cell in h3_counts (finer ones are bucketed on request)
COUNTED = range(11)
#: the finest counted resolution
FINEST_COUNTED = COUNTED[-1]
#: the resolution stored with each facility (facilities.h3_15)
STORED_RESOLUTION = 15


def cells(lat: np.ndarray, lon: np.ndarray, resolution: int = STORED_RESOLUTION) -> np.ndarray:
    """H3 cells (as int64) of points at one resolution, exactly h3.latlng_to_cell."""
    return _cells_at(np.asarray(lat).tolist(), np.asarray(lon).tolist(), resolution)


def counted_cells(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Each point's cell at every counted resolution (n × 11 int64; column r = resolution r)."""
    lats, lons = np.asarray(lat).tolist(), np.asarray(lon).tolist()
    table = np.empty((len(lats), len(COUNTED)), dtype=np.int64)
    for resolution in COUNTED:
        table[:, resolution] = _cells_at(lats, lons, resolution)
    return table


def cell_counts(cells: np.ndarray, layers: np.ndarray, weights: np.ndarray) -> pa.Table:
    """The sum of `weights` per (resolution, layer, cell) of facilities' cells (n × 11).

    h3_counts rows (or changes to them: a facility that left a cell weighs -1); sums of 0
    are left out.
    """
    keep = weights != 0
    resolutions = cells.shape[1]
    codes, names = pd.factorize(np.asarray(layers, dtype=object)[keep], sort=True)
    return _summed(
        np.repeat(codes, resolutions),
        names,
        cells[keep].ravel(),
        np.repeat(weights[keep].astype(np.int64), resolutions),
    )


def summed(counts: pa.Table) -> pa.Table:
    """Rows (resolution, layer, cell, count) summed per (resolution, layer, cell); sums of 0
    left out."""
    codes, names = pd.factorize(counts["layer"].to_numpy(zero_copy_only=False), sort=True)
    return _summed(
        codes,
        names,
        counts["cell"].to_numpy(),
        counts["count"].to_numpy().astype(np.int64),
    )


def _summed(codes: np.ndarray, names: Any, cells: np.ndarray, weights: np.ndarray) -> pa.Table:
    """Weights summed per (layer, cell), as h3_counts rows sorted by layer then cell.

    `codes` index `names` (the layers). A cell's index holds its resolution (bits 52-55), so
    per layer one sort of the cells groups by (resolution, cell): no three-key sort.
    """
    parts: list[pa.Table] = []
    for code, name in enumerate(names):
        mine = codes == code
        cell, inverse = np.unique(cells[mine], return_inverse=True)
        sums = np.bincount(inverse, weights=weights[mine], minlength=len(cell))
        nonzero = sums != 0
        cell = cell[nonzero]
        parts.append(
            pa.table(
                {
                    "resolution": ((cell >> 52) & 0xF).astype(np.int16),
                    "layer": pa.array(np.full(len(cell), name, dtype=object), pa.string()),
                    "cell": cell,
                    "count": sums[nonzero].astype(np.int32),
                }
            )  # fmt: skip
        )
    if not parts:
        return pa.table({
            "resolution": pa.array([], pa.int16()), "layer": pa.array([], pa.string()),
            "cell": pa.array([], pa.int64()), "count": pa.array([], pa.int32()),
        })  # fmt: skip
    return pa.concat_tables(parts)


class Tally:
    """Counts per (resolution, layer, cell) summed batch by batch (a bulk load's).

    Only counted resolutions: a district's coarse cells are a few thousand rows, however many
    facilities are counted in them.
    """

    def __init__(self) -> None:
        self.counts: pa.Table | None = None

    def add(self, counts: pa.Table) -> None:
        """Add a batch's counts (rows of `cell_counts`)."""
        both = counts if self.counts is None else pa.concat_tables([self.counts, counts])
        self.counts = summed(both)


def _cells_at(lats: list[float], lons: list[float], resolution: int) -> np.ndarray:
    # h3's integer API: the same cells without making and parsing a million hex strings
    return np.fromiter(
        map(h3_int.latlng_to_cell, lats, lons, itertools.repeat(resolution)),
        dtype=np.int64,
        count=len(lats),
    )
