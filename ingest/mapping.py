"""Which source column fills which facility field or layer attribute (TOML mapping file or flags).

The file's shape is public (CONTRACT.md, "Mapping file"):

    layer = "toilet"              # or: layer_field = "kind" with a [layer_values] table
    source = "adur-council"
    [geometry]                    # or: wkt = "WKT"; default: the file's own geometry
    x = "GeoX"
    y = "GeoY"
    crs = "EPSG:27700"
    [fields]                      # facility field = source column
    name = "LocationText"
    [attributes]                  # layer attribute = source column
    baby_change = "BabyChange"

Fields and attributes that the mapping does not name are filled from a column of the same name
when there is one (identity mapping), so a file already in our shape needs no mapping at all.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import layers
from ingest.report import IngestError
from layers import facility

#: facility fields a mapping (or a same-named column) can fill
FACILITY_FIELDS = facility.MAPPED_COLUMNS

_TOP_KEYS = {"layer", "layer_field", "layer_values", "source", "geometry", "fields", "attributes"}
_GEOMETRY_KEYS = {"x", "y", "wkt", "crs"}

#: column names (lower-cased) recognised as coordinates when nothing says which
X_NAMES = ("lon", "lng", "longitude", "long", "x", "geox", "easting", "经度", "coord_x", "point_x")
Y_NAMES = ("lat", "latitude", "y", "geoy", "northing", "纬度", "coord_y", "point_y")
WKT_NAMES = ("wkt", "geometry", "geom", "the_geom", "shape", "geometry_wkt")
#: column names (lower-cased) recognised as the source's own id when nothing names it
ID_NAMES = ("source_id", "id", "编号", "編號", "poi_id", "uid")
#: columns holding a per-row CRS label
CRS_LABEL_NAMES = ("crs", "coordinatereferencesystem", "srs", "srid", "epsg", "坐标系")


@dataclass
class Mapping:
    """A mapping of source columns to facility fields and layer attributes."""

    layer: str | None = None
    layer_field: str | None = None
    layer_values: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    x: str | None = None
    y: str | None = None
    wkt: str | None = None
    crs: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    #: where it came from, for error messages
    origin: str = "the options"
    #: where a setting came from when not from `origin` (the flag that gave it: "--crs")
    origins: dict[str, str] = field(default_factory=dict)

    def merged(self, **options: Any) -> Mapping:
        """This mapping with command-line options (those not None) taking precedence."""
        changes = {k: v for k, v in options.items() if v is not None}
        origins = dict(self.origins)
        origins.update({k: "--" + k.replace("_", "-") for k in changes})
        if "layer" in changes:
            changes.setdefault("layer_field", None)
        elif "layer_field" in changes:
            changes["layer"] = None
        return dataclasses.replace(self, **changes, origins=origins)

    def origin_of(self, setting: str) -> str:
        """Who gave a setting, as messages name it: "--crs" or "mapping f3.toml" ([geometry])."""
        if setting in self.origins:
            return self.origins[setting]
        if self.origin == "the options":
            return self.origin
        section = {
            "x": "[geometry] ",
            "y": "[geometry] ",
            "wkt": "[geometry] ",
            "crs": "[geometry] ",
        }
        return f"{self.origin} ({section.get(setting, '')}{setting})"

    def layer_keys(self) -> list[str]:
        """The layers rows may go to (validated: an unknown key fails here, before any reading)."""
        known = layers.all_layers()
        if self.layer is not None:
            layers.get_layer(self.layer)
            return [self.layer]
        for value, key in self.layer_values.items():
            if key not in known:
                raise IngestError(
                    f"{self.origin}: [layer_values] {value!r} = {key!r} is not a layer; "
                    f"known layers: {', '.join(sorted(known))}"
                )
        return list(known)

    def check(self) -> None:
        """Fail on contradictions and unknown names before any row is read."""
        if self.layer is not None and self.layer_field is not None:
            raise IngestError("give either --layer KEY or --layer-field COL, not both")
        if (self.x is None) != (self.y is None):
            raise IngestError(f"{self.origin}: give both x and y columns (or neither)")
        if self.wkt is not None and self.x is not None:
            raise IngestError(f"{self.origin}: give either x/y or wkt columns, not both")
        try:
            keys = self.layer_keys()
        except layers.UnknownLayer as exc:
            raise IngestError(str(exc)) from None
        for name in self.fields:
            if name not in FACILITY_FIELDS:
                raise IngestError(
                    f"{self.origin}: [fields] {name!r} is not a facility field; "
                    f"allowed: {', '.join(FACILITY_FIELDS)}"
                )
        allowed = {a for k in keys for a in layers.get_layer(k).attributes.model_fields}
        for name in self.attributes:
            if name not in allowed:
                raise IngestError(
                    f"{self.origin}: [attributes] {name!r} is not an attribute of "
                    f"{' / '.join(keys)}; allowed: {', '.join(sorted(allowed))}"
                )


def _strings(table: Any, where: str, origin: str) -> dict[str, str]:
    if not isinstance(table, dict):
        raise IngestError(f"{origin}: [{where}] must be a table of names to column names")
    for key, value in table.items():
        if not isinstance(value, str) or not value:
            raise IngestError(f"{origin}: [{where}] {key} must be a column name (text)")
    return dict(table)


def load_mapping(path: Path) -> Mapping:
    """Read a TOML mapping file; any unknown key or wrong type is a clear error."""
    origin = f"mapping {path.name}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise IngestError(f"mapping file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise IngestError(f"{origin} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise IngestError(
            f"{origin}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    for key in ("layer", "layer_field", "source"):
        if key in data and (not isinstance(data[key], str) or not data[key]):
            raise IngestError(f"{origin}: {key} must be text")
    geometry = _strings(data.get("geometry", {}), "geometry", origin)
    unknown = sorted(set(geometry) - _GEOMETRY_KEYS)
    if unknown:
        raise IngestError(
            f"{origin}: [geometry] unknown key(s) {', '.join(unknown)}; allowed: x, y, wkt, crs"
        )
    mapping = Mapping(
        layer=data.get("layer"),
        layer_field=data.get("layer_field"),
        layer_values=_strings(data.get("layer_values", {}), "layer_values", origin),
        source=data.get("source"),
        x=geometry.get("x"),
        y=geometry.get("y"),
        wkt=geometry.get("wkt"),
        crs=geometry.get("crs"),
        fields=_strings(data.get("fields", {}), "fields", origin),
        attributes=_strings(data.get("attributes", {}), "attributes", origin),
        origin=origin,
    )
    return mapping


def _find(columns: Sequence[str], names: Iterable[str]) -> str | None:
    lowered = {c.lower().strip(): c for c in columns}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


@dataclass
class Resolved:
    """A mapping resolved against one source's columns: every name is a real column."""

    layer: str | None
    layer_column: str | None
    layer_values: dict[str, str]
    layer_keys: list[str]
    field_columns: dict[str, str]
    #: layer key → attribute → column
    attribute_columns: dict[str, dict[str, str]]
    x: str | None
    y: str | None
    wkt: str | None
    crs_label: str | None


def resolve(mapping: Mapping, columns: Sequence[str], *, has_geometry: bool) -> Resolved:
    """Resolve a mapping against a source's columns; a named column that is missing fails here."""
    mapping.check()
    present = set(columns)
    shown = ", ".join(columns[:40]) + (" …" if len(columns) > 40 else "")

    def need(column: str, what: str) -> str:
        if column not in present:
            raise IngestError(
                f"{mapping.origin}: {what} names column {column!r}, which the file does not have; "
                f"its columns are: {shown}"
            )
        return column

    layer_column = need(mapping.layer_field, "layer_field") if mapping.layer_field else None
    if mapping.layer is None and layer_column is None:
        raise IngestError(
            "which layer? give --layer KEY, --layer-field COL or a mapping's layer; "
            f"known layers: {', '.join(sorted(layers.all_layers()))}"
        )
    keys = mapping.layer_keys()
    field_columns = {f: need(c, f"[fields] {f}") for f, c in mapping.fields.items()}
    for name in FACILITY_FIELDS:
        if name not in field_columns and name in present:
            field_columns[name] = name
    if "source_id" not in field_columns:
        # an id column the mapping did not name is still the source's identity
        found = _find(columns, ID_NAMES)
        if found is not None:
            field_columns["source_id"] = found
    attribute_columns: dict[str, dict[str, str]] = {}
    for key in keys:
        names = layers.get_layer(key).attributes.model_fields
        chosen = {
            a: need(c, f"[attributes] {a}") for a, c in mapping.attributes.items() if a in names
        }
        for name in names:
            if name not in chosen and name in present:
                chosen[name] = name
        attribute_columns[key] = chosen
    x = need(mapping.x, "[geometry] x") if mapping.x else None
    y = need(mapping.y, "[geometry] y") if mapping.y else None
    wkt = need(mapping.wkt, "[geometry] wkt") if mapping.wkt else None
    if x is None and wkt is None and not has_geometry:
        x, y = _find(columns, X_NAMES), _find(columns, Y_NAMES)
        if x is None or y is None:
            x = y = None
            wkt = _find(columns, WKT_NAMES)
        if x is None and wkt is None:
            raise IngestError(
                "no coordinate columns: name them with --x COL --y COL or a mapping's "
                f"[geometry] x/y or wkt; the file's columns are: {shown}"
            )
    crs_label = _find(columns, CRS_LABEL_NAMES) if not has_geometry else None
    return Resolved(
        layer=mapping.layer,
        layer_column=layer_column,
        layer_values=dict(mapping.layer_values),
        layer_keys=keys,
        field_columns=field_columns,
        attribute_columns=attribute_columns,
        x=x,
        y=y,
        wkt=wkt,
        crs_label=crs_label,
    )
