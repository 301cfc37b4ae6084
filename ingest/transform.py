"""Pure transforms: a read chunk → canonical columns (mapping) → WGS 84 positions → records.

Vectorised throughout: per-value work (opening hours, yes/no, attribute validation) runs once
per distinct value, never once per row, so a million-row file with a few distinct values costs
a few million numpy operations, not a million Python calls.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shapely

import layers
from ingest import crs as crs_mod
from ingest.h3cells import STORED_RESOLUTION as H3_STORED_RESOLUTION
from ingest.h3cells import cells as h3_cells
from ingest.hours import normalise_hours
from ingest.load import content_hashes, facility_ids
from ingest.mapping import FACILITY_FIELDS, Resolved
from ingest.readers import MAX_FIELD_CHARS, Chunk
from ingest.report import Issue, shown_value
from layers.hours import hours_valid

#: decimals of the rounded position in a generated source id (~11 m)
ID_POSITION_DECIMALS = 4


def text_values(values: pd.Series) -> pd.Series:
    """A column as stripped text in pandas' Arrow-backed str dtype; empty or missing → NaN.

    Text stays in Arrow from the reader to the COPY: a round trip through Python objects cost
    more than everything done with the values.
    """
    if pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if len(finite) and bool(np.all(np.mod(finite.to_numpy(), 1) == 0)):
            # ids read as floats (60001449.0) are integers that lost their type
            values = values.astype("Int64")
    if pd.api.types.is_bool_dtype(values.dtype):
        values = values.astype(object)
    text = values.astype("str").str.strip()
    return text.mask(text == "")


def text_column(values: pd.Series) -> pd.Series:
    """A column as stripped text (object dtype); empty or missing → None."""
    text = text_values(values)
    return text.astype(object).where(text.notna(), None)


def _plain(value: Any) -> Any:
    """A cell as a plain Python value for validation: NaN/NA/empty → None, text stripped."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, str):
        stripped = value.strip()
        return stripped or None
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class Canonical:
    """One chunk in our terms: fields, attribute values, source coordinates; and its issues."""

    frame: pd.DataFrame
    #: source x/y (for x/y or point sources) in the source CRS
    x: np.ndarray
    y: np.ndarray
    #: non-point geometries in the source CRS (None for points / column coordinates)
    shapes: np.ndarray
    #: per-row CRS label (text) or None
    crs_labels: np.ndarray | None
    issues: list[Issue]


def _where(frame: pd.DataFrame, i: int) -> tuple[int | None, str | None]:
    row = frame["_row"].to_numpy()[i]
    fid = frame["_fid"].to_numpy()[i]
    return (int(row) if row is not None else None, None if fid is None else str(fid))


def issue(
    frame: pd.DataFrame, i: int, field: str, value: Any, reason: str, severity: str = "error"
) -> Issue:
    """An issue about row position `i` of a canonical frame."""
    row, fid = _where(frame, i)
    shown = shown_value(value)
    if shown is not None:
        # the report is stored as text, which cannot hold NUL
        shown = shown.replace("\x00", "\\x00")
    return Issue(row, fid, field, shown, reason, "warning" if severity == "warning" else "error")


def to_canonical(chunk: Chunk, resolved: Resolved, *, canonical_source: bool) -> Canonical:
    """Apply a resolved mapping to a chunk: layer, text fields, raw attributes, coordinates."""
    src = chunk.frame
    n = len(src)
    frame = pd.DataFrame(index=pd.RangeIndex(n))
    frame["_row"] = chunk.rows
    frame["_fid"] = chunk.fids if chunk.fids is not None else np.full(n, None, dtype=object)
    issues: list[Issue] = []
    # layer: fixed, or from a column through [layer_values]
    if resolved.layer is not None:
        frame["layer"] = resolved.layer
    else:
        issues.extend(_layer_column(frame, src, resolved))
    for name in FACILITY_FIELDS:
        column = resolved.field_columns.get(name)
        frame[name] = text_values(src[column]) if column is not None else None
    _attribute_columns(frame, src, resolved, canonical_source=canonical_source)
    # coordinates in the source CRS
    x = np.full(n, np.nan)
    y = np.full(n, np.nan)
    shapes = np.full(n, None, dtype=object)
    if resolved.x is not None and resolved.y is not None:
        issues.extend(_xy_columns(frame, src, (resolved.x, x), (resolved.y, y)))
    else:
        geoms, field, geometry_issues = _geometries(frame, chunk, resolved)
        issues.extend(geometry_issues)
        if geoms is None:
            # plain points read without shapely (readers.point_xy): none missing or empty
            assert chunk.xy is not None
            x[:] = chunk.xy[:, 0]
            y[:] = chunk.xy[:, 1]
        else:
            issues.extend(_split_points(frame, geoms, field, x, y, shapes))
    labels = (
        text_column(src[resolved.crs_label]).to_numpy(dtype=object)
        if resolved.crs_label is not None
        else None
    )
    issues.extend(_long_fields(frame, src))
    return Canonical(frame, x, y, shapes, labels, issues)


def _layer_column(frame: pd.DataFrame, src: pd.DataFrame, resolved: Resolved) -> list[Issue]:
    """Fill frame["layer"] from the layer column through [layer_values]; the unknown ones."""
    assert resolved.layer_column is not None
    raw_layer = text_values(src[resolved.layer_column])
    known = set(layers.all_layers())
    lookup = {str(k).strip(): v for k, v in resolved.layer_values.items()}
    unique = pd.unique(raw_layer.dropna())
    resolved_values = {u: lookup.get(u, u if u in known else None) for u in unique.tolist()}
    # a few distinct values: map their codes, not every row's text
    codes, uniques = pd.factorize(raw_layer)
    mapped = np.array([resolved_values[u] for u in uniques.tolist()] + [None], dtype=object)
    frame["layer"] = pd.Series(mapped[codes], dtype="str")
    issues: list[Issue] = []
    for i in np.flatnonzero(frame["layer"].isna().to_numpy()).tolist():
        value = raw_layer.iat[i]
        missing = not isinstance(value, str)
        reason = (
            "missing layer"
            if missing
            else f"unknown layer; known layers: {', '.join(sorted(known))}"
        )
        issues.append(
            issue(frame, int(i), resolved.layer_column, None if missing else value, reason)
        )
    return issues


def _attribute_columns(
    frame: pd.DataFrame, src: pd.DataFrame, resolved: Resolved, *, canonical_source: bool
) -> None:
    """Add the attribute columns (attr.<name>, raw typed values) and OSM's unnamed flag."""
    attribute_sources: dict[str, str] = {}
    for mapping in resolved.attribute_columns.values():
        attribute_sources.update({a: c for a, c in mapping.items()})
    for attr, column in attribute_sources.items():
        frame[f"attr.{attr}"] = src[column].to_numpy(dtype=object)
    if canonical_source:
        for column in src.columns:
            if column.startswith("attr."):
                frame[column] = src[column].to_numpy(dtype=object)
        if "__unnamed__" in src.columns:
            frame["_unnamed"] = src["__unnamed__"].fillna(False).to_numpy(dtype=bool)


def _xy_columns(
    frame: pd.DataFrame, src: pd.DataFrame, *targets: tuple[str, np.ndarray]
) -> list[Issue]:
    """Fill each (column, array) pair with the column's numbers; the missing and non-numbers."""
    issues: list[Issue] = []
    for column, target in targets:
        raw = text_values(src[column])
        numbers = pd.to_numeric(raw, errors="coerce")
        target[:] = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        for i in np.flatnonzero(raw.isna().to_numpy()).tolist():
            issues.append(issue(frame, int(i), column, None, "missing coordinate"))
        for i in np.flatnonzero((raw.notna() & numbers.isna()).to_numpy()).tolist():
            issues.append(issue(frame, int(i), column, raw.iat[i], "not a number"))
    return issues


def _geometries(
    frame: pd.DataFrame, chunk: Chunk, resolved: Resolved
) -> tuple[np.ndarray | None, str, list[Issue]]:
    """(geometries, their field name, missing or unreadable ones) from WKT or the file's own.

    None: the reader gave plain points as an array (`chunk.xy`) instead.
    """
    n = len(frame)
    issues: list[Issue] = []
    if resolved.wkt is not None:
        raw = text_column(chunk.frame[resolved.wkt])
        geoms = shapely.from_wkt(raw.to_numpy(dtype=object), on_invalid="ignore")
        for i in np.flatnonzero((raw.notna() & pd.isna(geoms)).to_numpy()).tolist():
            issues.append(issue(frame, int(i), resolved.wkt, raw.iat[i], "not valid WKT"))
        for i in np.flatnonzero(raw.isna().to_numpy()).tolist():
            issues.append(issue(frame, int(i), resolved.wkt, None, "missing geometry"))
        return geoms, resolved.wkt, issues
    if chunk.xy is not None:
        return None, "geometry", issues
    geoms = chunk.geometry if chunk.geometry is not None else np.full(n, None)
    for i in np.flatnonzero(pd.isna(geoms)).tolist():
        issues.append(issue(frame, int(i), "geometry", None, "missing geometry"))
    return geoms, "geometry", issues


def _split_points(
    frame: pd.DataFrame,
    geoms: np.ndarray,
    field: str,
    x: np.ndarray,
    y: np.ndarray,
    shapes: np.ndarray,
) -> list[Issue]:
    """Points' coordinates into x/y, other geometries into shapes; the empty ones' issues."""
    n = len(frame)
    geoms = np.asarray(geoms, dtype=object)
    present = ~pd.isna(geoms)
    empty = np.zeros(n, dtype=bool)
    empty[present] = shapely.is_empty(geoms[present].astype(object))
    issues = [issue(frame, int(i), field, "EMPTY", "empty geometry") for i in np.flatnonzero(empty)]
    usable = present & ~empty
    kinds = np.full(n, -1)
    kinds[usable] = shapely.get_type_id(geoms[usable])
    is_point = kinds == 0
    x[is_point] = shapely.get_x(geoms[is_point])
    y[is_point] = shapely.get_y(geoms[is_point])
    other = usable & ~is_point
    shapes[other] = geoms[other]
    return issues


def _long_fields(frame: pd.DataFrame, src: pd.DataFrame) -> list[Issue]:
    """Every text cell longer than MAX_FIELD_CHARS, wherever it is mapped to."""
    found: list[Issue] = []
    for column in src.columns:
        values = src[column]
        if values.dtype != object and not pd.api.types.is_string_dtype(values.dtype):
            continue
        try:
            lengths = values.str.len().fillna(0).to_numpy()
        except AttributeError:  # an object column without text
            continue
        for i in np.flatnonzero(lengths > MAX_FIELD_CHARS).tolist():
            found.append(
                issue(
                    frame,
                    int(i),
                    str(column),
                    values.iat[i],
                    f"field too long ({int(lengths[i]):,} characters; at most {MAX_FIELD_CHARS:,})",
                )
            )
    return found


def normalised_name(name: str) -> str:
    """A name folded for identity: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def generated_source_ids(
    layer: Sequence[str], name: Sequence[str], lon: np.ndarray, lat: np.ndarray
) -> list[str]:
    """Stable ids for sources without an id column: layer + normalised name + rounded position."""
    out = []
    for la, na, x, y in zip(layer, name, lon.tolist(), lat.tolist(), strict=True):
        key = f"{la}\x1f{normalised_name(na)}\x1f{y:.{ID_POSITION_DECIMALS}f},{x:.{ID_POSITION_DECIMALS}f}"
        out.append("auto-" + hashlib.blake2b(key.encode(), digest_size=8).hexdigest())
    return out


def attribute_json(frame: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, list[Issue]]:
    """Validated attributes (JSON text) of the given row positions, and the invalid ones' issues.

    Each layer's attribute model validates each distinct combination of values once.
    """
    out = np.full(len(frame), "{}", dtype=object)
    issues: list[Issue] = []
    layer_values = frame["layer"].to_numpy(dtype=object)
    for key in pd.unique(layer_values[rows]).tolist():
        if key is None:
            continue
        layer = layers.get_layer(key)
        positions = rows[layer_values[rows] == key]
        names = [a for a in layer.attributes.model_fields if f"attr.{a}" in frame.columns]
        if not names:
            continue
        # each column's distinct values, made plain once; then the distinct combinations
        codes = np.empty((len(positions), len(names)), dtype=np.int64)
        plain: list[list[Any]] = []
        for j, a in enumerate(names):
            column_codes, values = _plain_codes(frame[f"attr.{a}"].take(positions))
            codes[:, j] = column_codes
            plain.append(values)
        combos, inverse = _distinct_rows(codes, [len(v) for v in plain])
        texts = np.empty(len(combos), dtype=object)
        failures: dict[int, tuple[list[tuple[str, str]], tuple[Any, ...]]] = {}
        for u, combo_codes in enumerate(combos.tolist()):
            combo = tuple(plain[j][c] for j, c in enumerate(combo_codes))
            raw = {a: v for a, v in zip(names, combo, strict=True) if v is not None}
            errors = layer.attribute_errors(raw)
            if errors:
                failures[u] = (errors, combo)
                texts[u] = None
            else:
                texts[u] = json.dumps(
                    layer.validate_attributes(raw), ensure_ascii=False, sort_keys=True
                )
        out[positions] = texts[inverse]
        for u, (errors, combo) in failures.items():
            for p in positions[inverse == u].tolist():
                for field, reason in errors:
                    value = combo[names.index(field)] if field in names else None
                    issues.append(issue(frame, int(p), f"attributes.{field}", value, reason))
    return out, issues


def _distinct_rows(codes: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a code matrix (codes[:, j] < sizes[j]) and each row's position there.

    One int64 key per row (mixed radix) hashed by pandas: sorting rows (np.unique(axis=0)) cost
    more than the attribute validation it served.
    """
    radix = np.cumprod([1, *sizes[:0:-1]])[::-1]
    if math.prod(sizes) >= 2**62:
        combos, inverse = np.unique(codes, axis=0, return_inverse=True)
        return combos, inverse.reshape(-1)
    inverse, keys = pd.factorize(codes @ radix)
    combos = (np.asarray(keys)[:, None] // radix) % np.asarray(sizes)
    return combos, inverse


def _plain_codes(values: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """Codes of a column's values and the plain value (`_plain`) of each code."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    plain = [_plain(v) for v in uniques.tolist()]
    # distinct raw values may be one plain value (" yes" and "yes", NaN and None)
    merged, distinct = pd.factorize(pd.Series(plain, dtype=object), use_na_sentinel=False)
    return merged[codes], [_plain(v) for v in distinct.tolist()]  # NaN there stood for None


def opening_hours(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(OSM opening_hours normalised from the source's text or None, mask of rows not understood).

    Hours as Chinese sources write them (周一至周五 08:30-17:30) are rewritten in OSM syntax by
    `ingest.hours`, once per distinct text; valid OSM is kept as it is.
    """
    unique = pd.unique(values.dropna()).tolist()
    expressions = {raw: normalise_hours(str(raw)).expression for raw in unique}
    understood = {raw: e for raw, e in expressions.items() if e is not None and hours_valid(e)}
    ok = values.isin(list(understood))
    normalised = values.where(ok, None).map(understood, na_action="ignore")
    bad = (values.notna() & ~ok).to_numpy()
    return normalised, bad


def _per_value(values: pd.Series, convert: Callable[[Any], Any]) -> pd.Series:
    """`convert` of each row's value, called once per distinct value; missing → None."""
    codes, uniques = pd.factorize(values)
    converted = np.array([*(convert(u) for u in uniques.tolist()), None], dtype=object)
    return pd.Series(converted[codes], index=values.index, dtype=object)


def tristate(values: pd.Series) -> pd.Series:
    """Yes/no text → True/False; anything else → None (unknown)."""
    return _per_value(values, layers.parse_tristate)


def verified_times(values: pd.Series, timezone: str) -> tuple[pd.Series, np.ndarray]:
    """Timestamps (ISO text, UTC) from mixed date text; unparseable → None (and flagged)."""

    def parse(v: Any) -> str | None:
        try:
            stamp = (
                pd.Timestamp(v)
                if "T" in str(v) or "-" in str(v)[:5]
                else pd.to_datetime(v, dayfirst=True)
            )
        except (ValueError, TypeError, OverflowError):
            return None
        if pd.isna(stamp):
            return None
        if stamp.tzinfo is None:
            stamp = stamp.tz_localize(timezone)
        return str(stamp.tz_convert("UTC").isoformat())

    out = _per_value(values, parse)
    bad = (values.notna() & out.isna()).to_numpy()
    return out, bad


def records(
    frame: pd.DataFrame,
    lon: np.ndarray,
    lat: np.ndarray,
    footprints: np.ndarray,
    attributes: np.ndarray,
    *,
    source: str,
) -> pd.DataFrame:
    """Canonical records (layers.facility.RECORD_COLUMNS + row_no) of already validated rows."""
    n = len(frame)

    def column(name: str) -> Any:
        # Arrow-backed text is handed on as it is (no conversion); anything else as objects
        values = frame[name]
        return (
            values.array
            if isinstance(values.dtype, pd.StringDtype)
            else values.to_numpy(dtype=object)
        )

    footprint_hex = np.full(n, None, dtype=object)
    has = ~pd.isna(footprints)
    if has.any():
        with_srid = shapely.set_srid(footprints[has], 4326)
        footprint_hex[has] = shapely.to_wkb(with_srid, hex=True, include_srid=True)
    source_ids = column("source_id")
    data: dict[str, Any] = {
        "id": facility_ids(source, frame["source_id"].tolist()),
        "source_id": source_ids,
        **{
            name: column(name)
            for name in ("layer", "name", "name_en", "address", "phone", "website")
        },
        "opening_hours": column("opening_hours_norm"),
        "opening_hours_raw": column("opening_hours"),
        "accessible": frame["accessible_bool"].to_numpy(dtype=object),
        "status": frame["status"].fillna("active").array,
        "status_reason": column("status_reason"),
        "attributes": attributes,
        "lon": lon,
        "lat": lat,
        "footprint": footprint_hex,
        "h3_15": h3_cells(lat, lon),
        "verified_at": frame["verified_at_iso"].to_numpy(dtype=object),
        "row_no": frame["_row"].to_numpy(),
    }
    out = pd.DataFrame(data, index=pd.RangeIndex(n))
    out["content_hash"] = content_hashes(out)
    return out


__all__ = [
    "H3_STORED_RESOLUTION",
    "Canonical",
    "attribute_json",
    "crs_mod",
    "generated_source_ids",
    "h3_cells",
    "normalised_name",
    "opening_hours",
    "records",
    "text_column",
    "text_values",
    "to_canonical",
    "tristate",
    "verified_times",
]
