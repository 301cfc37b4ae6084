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
from dataclasses import dataclass

import h3.api.basic_int as h3_int
import numpy as np
import pandas as pd

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


@dataclass
class CellCounts:
    """Rows of h3_counts (or changes to them), column-wise, sorted by layer then cell."""

    resolution: np.ndarray  # int16
    layer: np.ndarray  # str objects
    cell: np.ndarray  # int64
    count: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.cell)

    @classmethod
    def empty(cls) -> CellCounts:
        """No counts at all."""
        return cls(
            np.empty(0, dtype=np.int16),
            np.empty(0, dtype=object),
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.int32),
        )


def cell_counts(cells: np.ndarray, layers: np.ndarray, weights: np.ndarray) -> CellCounts:
    """The sum of `weights` per (resolution, layer, cell) of facilities' cells (n × 11).

    h3_counts rows (or changes to them: a facility that left a cell weighs -1); sums of 0
    are left out.
    """
    keep = weights != 0
    resolutions = cells.shape[1]
    codes, names = pd.factorize(np.asarray(layers, dtype=object)[keep])
    return _summed(
        np.repeat(codes, resolutions),
        names,
        cells[keep].ravel(),
        np.repeat(weights[keep].astype(np.int64), resolutions),
    )


def counts_of(lat: np.ndarray, lon: np.ndarray, layers: np.ndarray, live: np.ndarray) -> CellCounts:
    """The counts of facilities at these points, of these layers, where `live`."""
    return cell_counts(counted_cells(lat, lon), layers, np.asarray(live, dtype=np.int32))


def summed(first: CellCounts, *more: CellCounts) -> CellCounts:
    """Counts summed per (resolution, layer, cell); sums of 0 left out."""
    parts = (first, *more)
    codes, names = pd.factorize(np.concatenate([p.layer for p in parts]))
    return _summed(
        codes,
        names,
        np.concatenate([p.cell for p in parts]),
        np.concatenate([p.count for p in parts]).astype(np.int64),
    )


def _summed(
    codes: np.ndarray, names: np.ndarray, cells: np.ndarray, weights: np.ndarray
) -> CellCounts:
    """Weights summed per (layer, cell), sorted by layer then cell.

    `codes` index `names` (the layers). A cell's index holds its resolution (bits 52-55), so
    per layer one sort of the cells groups by (resolution, cell): no three-key sort.
    """
    parts: list[tuple[np.ndarray, str, np.ndarray]] = []
    for code, name in enumerate(list(names)):
        mine = codes == code
        cell, inverse = np.unique(cells[mine], return_inverse=True)
        sums = np.bincount(inverse, weights=weights[mine], minlength=len(cell))
        nonzero = sums != 0
        parts.append((cell[nonzero], name, sums[nonzero].astype(np.int32)))
    if not parts:
        return CellCounts.empty()
    cell = np.concatenate([c for c, _, _ in parts])
    return CellCounts(
        resolution=((cell >> 52) & 0xF).astype(np.int16),
        layer=np.repeat(
            np.array([name for _, name, _ in parts], dtype=object), [len(c) for c, _, _ in parts]
        ),
        cell=cell,
        count=np.concatenate([n for _, _, n in parts]),
    )


class Tally:
    """Counts per (resolution, layer, cell) summed chunk by chunk (a bulk load's).

    Only counted resolutions: a district's coarse cells are a few thousand rows, however many
    facilities are counted in them. (A bulk load keeps one in a process of its own:
    ingest.h3tally.)
    """

    def __init__(self) -> None:
        self.counts = CellCounts.empty()

    def add(self, counts: CellCounts) -> None:
        """Add counts (of `cell_counts`)."""
        self.counts = summed(self.counts, counts)


def _cells_at(lats: list[float], lons: list[float], resolution: int) -> np.ndarray:
    # h3's integer API: the same cells without making and parsing a million hex strings
    return np.fromiter(
        map(h3_int.latlng_to_cell, lats, lons, itertools.repeat(resolution)),
        dtype=np.int64,
        count=len(lats),
    )
