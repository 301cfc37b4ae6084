"""Per-row validation: what is wrong with a row, where, in which field, and why.

Errors reject a row (and, by default, the whole file); warnings keep it (unparseable opening
hours keep their raw text, a misspelt CRS label gives way to the mapping's CRS).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ingest import crs as crs_mod
from ingest.mapping import Resolved
from ingest.report import IngestError, Issue
from ingest.transform import issue
from layers.facility import STATUSES

BBox = tuple[float, float, float, float]

#: the most characters a facility text field may hold: more is a broken source, not a name
#: (a 100,000-character name made a 627 kB page)
MAX_TEXT_CHARS = {
    "source_id": 200,
    "name": 200,
    "name_en": 300,
    "address": 500,
    "phone": 100,
    "website": 2_000,
    "opening_hours": 1_000,
    "status": 50,
    "status_reason": 1_000,
}
#: the most characters of one text attribute value
MAX_ATTRIBUTE_CHARS = 2_000


def inside(lon: np.ndarray, lat: np.ndarray, bbox: BBox) -> np.ndarray:
    """Whether each point lies within a lon/lat box."""
    with np.errstate(invalid="ignore"):
        return (lon >= bbox[0]) & (lon <= bbox[2]) & (lat >= bbox[1]) & (lat <= bbox[3])


def _label(resolved: Resolved, name: str) -> str:
    column = resolved.field_columns.get(name)
    return column if column is not None and column != name else name


def check_fields(frame: pd.DataFrame, resolved: Resolved) -> list[Issue]:
    """Missing names and ids, unknown statuses; OSM elements named after their layer (warning)."""
    issues: list[Issue] = []
    for i in np.flatnonzero(frame["name"].isna().to_numpy()).tolist():
        issues.append(issue(frame, int(i), _label(resolved, "name"), None, "missing name"))
    if "_unnamed" in frame.columns:
        for i in np.flatnonzero(frame["_unnamed"].to_numpy(dtype=bool)).tolist():
            issues.append(
                issue(
                    frame,
                    int(i),
                    "name",
                    frame["name"].iat[i],
                    "no name in the source; named after its layer",
                    "warning",
                )  # fmt: skip
            )
    if "source_id" in resolved.field_columns:
        for i in np.flatnonzero(frame["source_id"].isna().to_numpy()).tolist():
            issues.append(issue(frame, int(i), _label(resolved, "source_id"), None, "missing id"))
    status = frame["status"]
    bad = (status.notna() & ~status.isin(STATUSES)).to_numpy()
    for i in np.flatnonzero(bad).tolist():
        issues.append(
            issue(
                frame,
                int(i),
                _label(resolved, "status"),
                status.iat[i],
                f"unknown status; allowed: {', '.join(STATUSES)}",
            )  # fmt: skip
        )
    return issues + check_text(frame, resolved)


def _text_lengths(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(characters, holds NUL) per value; 0 and False for values that are not text."""
    if values.dtype != object and pd.api.types.is_string_dtype(values.dtype):
        # the facility fields: Arrow-backed text, measured without a Python call per value
        lengths = values.str.len().fillna(0).to_numpy(dtype=np.int64)
        nul = values.str.contains("\x00", regex=False).fillna(False).to_numpy(dtype=bool)
        return lengths, nul
    if values.isna().all():  # a field the source does not map
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    text = [v if isinstance(v, str) else "" for v in values.tolist()]
    return (
        np.fromiter(map(len, text), dtype=np.int64, count=len(text)),
        np.fromiter(("\x00" in v for v in text), dtype=bool, count=len(text)),
    )


def check_text(frame: pd.DataFrame, resolved: Resolved) -> list[Issue]:
    """NUL characters (PostgreSQL text cannot hold them) and text longer than its field's cap."""
    issues: list[Issue] = []
    columns = [(c, _label(resolved, c), MAX_TEXT_CHARS[c]) for c in MAX_TEXT_CHARS if c in frame]
    attributes = [str(c) for c in frame.columns if str(c).startswith("attr.")]
    columns += [(c, c.removeprefix("attr."), MAX_ATTRIBUTE_CHARS) for c in attributes]
    for column, label, cap in columns:
        values = frame[column]
        lengths, has_nul = _text_lengths(values)
        for i in np.flatnonzero(has_nul).tolist():
            reason = "contains a NUL character (U+0000)"
            issues.append(issue(frame, int(i), label, values.iat[i], reason))
        for i in np.flatnonzero((lengths > cap) & ~has_nul).tolist():
            reason = f"too long ({int(lengths[i]):,} characters; at most {cap:,})"
            issues.append(issue(frame, int(i), label, values.iat[i], reason))
    return issues


def check_positions(
    frame: pd.DataFrame,
    *,
    x: np.ndarray,
    y: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
    checkable: np.ndarray,
    crs: crs_mod.Crs,
    bbox: BBox | None,
    allow_outside: bool,
    field: str,
) -> list[Issue]:
    """Non-finite, out-of-range, probably swapped and outside-the-district positions."""
    issues: list[Issue] = []
    finite = np.isfinite(lon) & np.isfinite(lat)
    source_finite = np.isfinite(x) & np.isfinite(y)

    def value(i: int) -> str:
        return f"({x[i]:g}, {y[i]:g})" if source_finite[i] or not np.isnan(x[i]) else "geometry"

    for i in np.flatnonzero(checkable & ~finite).tolist():
        reason = (
            f"cannot be converted from {crs} to WGS 84"
            if source_finite[i]
            else "not a finite number (NaN or infinity)"
        )
        issues.append(issue(frame, int(i), field, value(int(i)), reason))
    with np.errstate(invalid="ignore"):
        in_range = finite & (np.abs(lon) <= 180) & (np.abs(lat) <= 90)
    suspicious = checkable & finite & ~in_range
    if bbox is not None:
        suspicious |= checkable & in_range & ~inside(lon, lat, bbox)
    swapped = np.zeros(len(lon), dtype=bool)
    if bbox is not None and crs.is_geographic and suspicious.any():
        idx = np.flatnonzero(suspicious & source_finite)
        s_lon, s_lat = crs_mod.to_wgs84(y[idx], x[idx], crs)
        swapped[idx] = inside(s_lon, s_lat, bbox)
    for i in np.flatnonzero(swapped).tolist():
        issues.append(
            issue(
                frame,
                int(i),
                field,
                value(int(i)),
                "probably swapped: outside the district as (lon, lat) but inside as (lat, lon)",
            )  # fmt: skip
        )
    for i in np.flatnonzero(suspicious & ~swapped & ~in_range).tolist():
        issues.append(
            issue(
                frame,
                int(i),
                field,
                value(int(i)),
                "out of range: longitude must be within ±180 and latitude within ±90 "
                f"(after conversion from {crs})",
            )  # fmt: skip
        )
    if bbox is not None and not allow_outside:
        outside = suspicious & ~swapped & in_range
        box = ",".join(f"{v:g}" for v in bbox)
        for i in np.flatnonzero(outside).tolist():
            issues.append(
                issue(
                    frame,
                    int(i),
                    field,
                    f"({lon[i]:.6f}, {lat[i]:.6f})",
                    f"outside the district's extent {box} (use --allow-outside to keep it)",
                )  # fmt: skip
            )
    return issues


@dataclass
class CrsChoice:
    """Which CRS rows are in: the file's, the explicit one, or per-row labels that must agree."""

    explicit: crs_mod.Crs | None
    declared: crs_mod.Crs | None
    default: crs_mod.Crs
    origin: str
    established: crs_mod.Crs | None = None
    established_row: int | None = None
    fixed: crs_mod.Crs | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.declared is not None:
            if self.explicit is None or self.explicit.same(self.declared):
                self.fixed = self.declared
            elif self.explicit.proj is None and self.declared.is_wgs84:
                # vendor data saved as "WGS 84" GeoJSON is still GCJ-02/BD-09: trust the user
                self.fixed = self.explicit
            else:
                raise IngestError(
                    f"mixed CRS: the file declares {self.declared} but {self.origin} says "
                    f"{self.explicit}; drop that CRS (or fix the file)"
                )
        elif self.explicit is not None:
            self.fixed = self.explicit

    def for_chunk(
        self, frame: pd.DataFrame, labels: np.ndarray | None, label_field: str | None
    ) -> tuple[crs_mod.Crs, list[Issue]]:
        """The CRS of this chunk's rows, with issues for labels that disagree or are unknown."""
        issues: list[Issue] = []
        if labels is None or label_field is None:
            return self.fixed or self.established or self.default, issues
        series = pd.Series(labels, dtype=object)
        unique = pd.unique(series.dropna()).tolist()
        parsed = {u: crs_mod.parse_label(str(u)) for u in unique}
        if self.fixed is not None:
            for i in np.flatnonzero(series.notna().to_numpy()).tolist():
                label = series.iat[i]
                found = parsed[label]
                if found is None:
                    issues.append(
                        issue(
                            frame,
                            int(i),
                            label_field,
                            label,
                            f"CRS label not recognised; using {self.fixed} from {self.origin}",
                            "warning",
                        )  # fmt: skip
                    )
                elif not found.same(self.fixed):
                    issues.append(
                        issue(
                            frame,
                            int(i),
                            label_field,
                            label,
                            f"row says {found}; using {self.fixed} from {self.origin}",
                            "warning",
                        )  # fmt: skip
                    )
            return self.fixed, issues
        for i in np.flatnonzero(series.notna().to_numpy()).tolist():
            label = series.iat[i]
            found = parsed[label]
            if found is None:
                issues.append(
                    issue(
                        frame,
                        int(i),
                        label_field,
                        label,
                        "unknown CRS label: give the CRS with --crs or a mapping's [geometry] crs",
                    )  # fmt: skip
                )
            elif self.established is None:
                self.established = found
                self.established_row = int(frame["_row"].to_numpy()[i])
            elif not found.same(self.established):
                issues.append(
                    issue(
                        frame,
                        int(i),
                        label_field,
                        label,
                        f"mixed CRS: this row says {found} but row {self.established_row} says "
                        f"{self.established}; give one CRS with --crs",
                    )  # fmt: skip
                )
        return self.established or self.default, issues
