"""Pure transforms from a read GeoDataFrame to canonical facility records (see load.RECORD_COLUMNS)."""

from __future__ import annotations

import json
from typing import Any

import geopandas as gpd
import h3
import numpy as np
import pandas as pd

import layers
from geoservice.features import hours_valid
from ingest.load import RECORD_COLUMNS, facility_id

#: Facility fields a source column of the same name fills.
FACILITY_FIELDS = (
    "source_id",
    "name",
    "name_en",
    "address",
    "phone",
    "website",
    "opening_hours",
    "accessible",
    "status",
    "status_reason",
    "verified_at",
)

H3_STORED_RESOLUTION = 15


def h3_cells(
    lat: np.ndarray, lon: np.ndarray, resolution: int = H3_STORED_RESOLUTION
) -> np.ndarray:
    """H3 cells (as int64) of points, exactly h3.latlng_to_cell."""
    return np.fromiter(
        (h3.str_to_int(h3.latlng_to_cell(a, o, resolution)) for a, o in zip(lat, lon, strict=True)),
        dtype=np.int64,
        count=len(lat),
    )


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def records_from_frame(frame: gpd.GeoDataFrame, *, layer_key: str, source: str) -> pd.DataFrame:
    """Identity-mapped records: columns named like facility fields or layer attributes."""
    layer = layers.get_layer(layer_key)
    attribute_names = set(layer.attributes.model_fields)
    points = frame.geometry.representative_point()
    out = pd.DataFrame(index=frame.index)
    for name in FACILITY_FIELDS:
        out[name] = frame[name].map(_text) if name in frame.columns else None
    out["layer"] = layer_key
    out["lon"] = points.x.to_numpy()
    out["lat"] = points.y.to_numpy()
    is_point = frame.geometry.geom_type == "Point"
    out["footprint"] = [
        None if p else g.wkb_hex for p, g in zip(is_point, frame.geometry, strict=True)
    ]
    raw_hours = out["opening_hours"]
    out["opening_hours_raw"] = raw_hours
    out["opening_hours"] = [h if hours_valid(h) else None for h in raw_hours]
    out["accessible"] = [layers.parse_tristate(v) for v in out["accessible"]]
    out["status"] = out["status"].fillna("active")
    attribute_columns = [c for c in frame.columns if c in attribute_names]
    out["attributes"] = [
        json.dumps(
            layer.validate_attributes(
                {
                    c: v
                    for c, v in row.items()
                    if v is not None and not (isinstance(v, float) and np.isnan(v))
                }
            ),
            ensure_ascii=False,
        )
        for row in frame[attribute_columns].to_dict("records")
    ]
    out["source_id"] = out["source_id"].fillna(
        pd.Series(frame.index.astype(str), index=frame.index)
    )
    out["id"] = [facility_id(source, sid) for sid in out["source_id"]]
    out["h3_15"] = h3_cells(out["lat"].to_numpy(), out["lon"].to_numpy())
    return out.loc[:, list(RECORD_COLUMNS)]
