"""Coordinate systems: any EPSG code through pyproj, plus China's GCJ-02 and BD-09 via prcoords.

Everything is converted to WGS 84 (lon, lat). GCJ-02 and BD-09 are not EPSG systems and PROJ
does not know them, so they go through prcoords' iterative ("bored") inverses, which are exact
to well under a metre.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import prcoords
import pyproj
import shapely
from pyproj.exceptions import CRSError

from ingest.report import IngestError

WGS84 = "EPSG:4326"
CHINESE_OFFSETS = ("gcj02", "bd09")

#: labels data publishers write in a CRS column, normalised (see `_label_key`) → our CRS text
_LABEL_ALIASES = {
    "osgb36": "EPSG:27700",
    "osgb1936": "EPSG:27700",
    "britishnationalgrid": "EPSG:27700",
    "bng": "EPSG:27700",
    "wgs84": WGS84,
    "wgs1984": WGS84,
    "crs84": WGS84,
    "ogccrs84": WGS84,
    "gcj02": "gcj02",
    "gcj": "gcj02",
    "mars": "gcj02",
    "火星坐标": "gcj02",
    "火星坐标系": "gcj02",
    "国测局坐标": "gcj02",
    "bd09": "bd09",
    "bd09ll": "bd09",
    "baidu": "bd09",
    "百度坐标": "bd09",
    "cgcs2000": "EPSG:4490",
}


_UNAMBIGUOUS = re.compile(
    r"^\s*((EPSG|ESRI|OGC|IGNF)\s*:\s*\S+|\+proj=.*|(GEOG|PROJ|GEOD|COMPD)CRS\s*\[.*|"
    r"(GEOGCS|PROJCS|COMPD_CS)\s*\[.*|\{.*)$",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class Crs:
    """A source coordinate system: a pyproj CRS or one of the Chinese offset systems."""

    text: str
    proj: pyproj.CRS | None = None

    @property
    def is_wgs84(self) -> bool:
        """Whether coordinates are already WGS 84 lon/lat."""
        return self.proj is not None and _is_wgs84(self.proj)

    @property
    def is_geographic(self) -> bool:
        """Whether coordinates are degrees (lat/lon swaps are then detectable)."""
        return self.proj is None or bool(self.proj.is_geographic)

    def same(self, other: Crs) -> bool:
        """Whether two CRSs mean the same coordinates (EPSG:4326 and OGC:CRS84 do)."""
        if self.text == other.text or (self.is_wgs84 and other.is_wgs84):
            return True
        return self.proj is not None and other.proj is not None and self.proj == other.proj

    def __str__(self) -> str:
        return self.text


def _is_wgs84(crs: pyproj.CRS) -> bool:
    return crs.to_epsg() == 4326 or crs == pyproj.CRS("OGC:CRS84")


def _label_key(label: str) -> str:
    return re.sub(r"[\s_\-:.()]", "", label).lower()


@lru_cache(maxsize=256)
def parse_crs(text: str) -> Crs:
    """A CRS from user text: ``EPSG:n`` (or anything pyproj reads), ``gcj02`` or ``bd09``."""
    cleaned = text.strip()
    key = _label_key(cleaned)
    if key in CHINESE_OFFSETS:
        return Crs(key)
    if cleaned.isdigit():
        cleaned = f"EPSG:{cleaned}"
    # only unambiguous forms: pyproj would fuzzy-match a misspelt name ("OSGB3" → EPSG:4277)
    if not _UNAMBIGUOUS.match(cleaned):
        raise IngestError(
            f"unknown CRS {text!r}: give an EPSG code such as EPSG:4326 or EPSG:27700, "
            "or gcj02 / bd09"
        )
    try:
        proj = pyproj.CRS.from_user_input(cleaned)
    except CRSError:
        raise IngestError(
            f"unknown CRS {text!r}: give an EPSG code such as EPSG:4326 or EPSG:27700, "
            "or gcj02 / bd09"
        ) from None
    epsg = proj.to_epsg()
    return Crs(f"EPSG:{epsg}" if epsg else cleaned, proj)


def from_proj(proj: pyproj.CRS) -> Crs:
    """Wrap a CRS a file declares."""
    epsg = proj.to_epsg()
    return Crs(f"EPSG:{epsg}" if epsg else proj.to_string(), proj)


@lru_cache(maxsize=256)
def parse_label(label: str) -> Crs | None:
    """A CRS named in a per-row label column ("OSGB36", "EPSG:27700", "WGS84"); None if unknown."""
    alias = _LABEL_ALIASES.get(_label_key(label))
    try:
        return parse_crs(alias or label)
    except IngestError:
        return None


def _prcoords_inverse(kind: str) -> Callable[[prcoords.Coords], prcoords.Coords]:
    return prcoords.gcj_wgs_bored if kind == "gcj02" else prcoords.bd_wgs_bored  # type: ignore[no-any-return]


def to_wgs84(x: np.ndarray, y: np.ndarray, crs: Crs) -> tuple[np.ndarray, np.ndarray]:
    """Source x/y (lon/lat or easting/northing) as WGS 84 (lon, lat) arrays; bad input → NaN/inf."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if crs.is_wgs84:
        return x.copy(), y.copy()
    if crs.proj is not None:
        transformer = _transformer(crs.proj.to_wkt())
        with np.errstate(all="ignore"):
            lon, lat = transformer.transform(x, y, errcheck=False)
        return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    inverse = _prcoords_inverse(crs.text)
    lon, lat = x.copy(), y.copy()
    ok = np.isfinite(x) & np.isfinite(y) & (np.abs(x) <= 180) & (np.abs(y) <= 90)
    for i in np.flatnonzero(ok):
        # check_china=False: the offset applies wherever the vendor applied it
        point = inverse(prcoords.Coords(float(y[i]), float(x[i])), check_china=False)  # type: ignore[call-arg]
        lon[i], lat[i] = point.lon, point.lat
    return lon, lat


@lru_cache(maxsize=32)
def _transformer(wkt: str) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(wkt), WGS84, always_xy=True)


def geometries_to_wgs84(geoms: np.ndarray, crs: Crs) -> np.ndarray:
    """Shapely geometries (any type) transformed to WGS 84."""
    if crs.is_wgs84:
        return geoms

    def _apply(coords: np.ndarray) -> np.ndarray:
        lon, lat = to_wgs84(coords[:, 0], coords[:, 1], crs)
        return np.column_stack([lon, lat])

    return np.asarray(shapely.transform(geoms, _apply))
