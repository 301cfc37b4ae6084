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
    cells, weights = cells[keep], weights[keep]
    n, resolutions = cells.shape
    return summed(
        pa.table({
            "resolution": np.tile(np.arange(resolutions, dtype=np.int16), n),
            "layer": pa.array(np.repeat(np.asarray(layers, dtype=object)[keep], resolutions),
                              pa.string()),
            "cell": cells.ravel(),
            "count": np.repeat(weights.astype(np.int32), resolutions),
        })
    )  # fmt: skip


def summed(counts: pa.Table) -> pa.Table:
    """Rows (resolution, layer, cell, count) summed per (resolution, layer, cell), sorted so;
    sums of 0 left out."""
    layer_codes, names = pd.factorize(counts["layer"].to_pandas())
    resolution = counts["resolution"].to_numpy()
    cell = counts["cell"].to_numpy()
    weight = counts["count"].to_numpy().astype(np.int64)
    order = np.lexsort((cell, layer_codes, resolution))
    resolution, layer, cell, weight = (
        resolution[order], layer_codes[order], cell[order], weight[order]
    )  # fmt: skip
    starts = np.flatnonzero(
        np.r_[True, (cell[1:] != cell[:-1]) | (layer[1:] != layer[:-1])
              | (resolution[1:] != resolution[:-1])]
    )  # fmt: skip
    sums = np.add.reduceat(weight, starts) if len(starts) else weight[:0]
    nonzero = sums != 0
    starts = starts[nonzero]
    return pa.table({
        "resolution": resolution[starts].astype(np.int16),
        "layer": pa.array(np.asarray(names, dtype=object)[layer[starts]], pa.string()),
        "cell": cell[starts],
        "count": sums[nonzero].astype(np.int32),
    })  # fmt: skip


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
