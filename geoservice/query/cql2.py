"""CQL2 filters (OGC API - Features Part 3) compiled to SQL over a whitelist of queryables.

A filter is parsed by pygeofilter (text or JSON) and compiled here, node by node, into a
``psycopg.sql`` condition over the facilities table (alias ``f``). Property names only ever
select an entry of the layer's queryables — each an SQL expression written in this module —
and every value from the filter is a bound parameter, never SQL text. Anything the compiler
does not know (an operator, a property, a type mismatch) is refused with a 400 that names it
and where it is in the filter; nothing is evaluated in Python, so what the database selects
is exactly what the filter says.

What is implemented, and declared in ``CONFORMANCE``: Basic CQL2 (comparisons, ``AND``/``OR``/
``NOT``, ``IS NULL``), the advanced comparison operators (``LIKE``, ``BETWEEN``, ``IN``),
``CASEI`` and the basic spatial function ``S_INTERSECTS`` (also the draft ``BBOX``) with a
point, line, polygon, multi-geometry or ``BBOX``/``ENVELOPE`` literal in CRS84.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import shapely
import shapely.errors
import shapely.geometry
from lark.exceptions import LarkError, UnexpectedEOF, UnexpectedInput
from psycopg import sql
from pygeofilter import ast, values  # type: ignore[import-untyped]
from pygeofilter.parsers.cql2_json import (  # type: ignore[import-untyped]
    parse as parse_cql2_json,
)
from pygeofilter.parsers.cql2_text import (  # type: ignore[import-untyped]
    parse as parse_cql2_text,
)

import layers
from geoservice.api.errors import ServiceMapError
from layers import facility

#: Part 3 and CQL2 conformance classes this compiler implements
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    # the draft's name of the same class (QGIS before 3.44 looks for it)
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-operators",
]
#: filter-lang values; "cql-text" is the draft's name that GDAL ≤ 3.6 sends (same syntax here)
LANGUAGES = ("cql2-text", "cql2-json", "cql-text")
#: the queryable of the facility's point
GEOMETRY = "geometry"
#: longest filter accepted (characters)
MAX_FILTER_LENGTH = 20_000
#: most comparisons, IN values and geometries one filter may hold
MAX_NODES = 500


class InvalidFilter(ServiceMapError):
    """A filter that does not parse, names an unknown property or mixes types (400)."""

    status_code = 400


@dataclass(frozen=True)
class Queryable:
    """A property a filter may name: its JSON Schema and the SQL expression it stands for."""

    name: str
    #: "string", "boolean", "integer", "number", "date-time" or "geometry"
    kind: str
    expression: sql.Composable
    title: str
    enum: tuple[str, ...] | None = None

    def schema(self) -> dict[str, Any]:
        """This property in the queryables JSON Schema."""
        if self.kind == GEOMETRY:
            return {
                "title": self.title,
                "format": "geometry-point",
                "x-ogc-role": "primary-geometry",
            }
        schema: dict[str, Any] = {"title": self.title}
        if self.kind == "date-time":
            schema.update(type="string", format="date-time")
        else:
            schema["type"] = self.kind
        if self.enum:
            schema["enum"] = list(self.enum)
        return schema


def _column(name: str) -> sql.Composable:
    return sql.SQL("f.{}").format(sql.Identifier(name))


def _attribute(key: str, kind: str) -> sql.Composable:
    """A typed value of the facility's ``attributes`` JSON, NULL when absent or of another type.

    The type guard keeps the cast from ever failing: a stored value of another JSON type is
    treated as unknown, which no comparison selects.
    """
    json_type = {"integer": "number"}.get(kind, kind)
    cast = {"string": "text", "boolean": "boolean", "integer": "numeric", "number": "numeric"}
    return sql.SQL(
        "(CASE WHEN jsonb_typeof(f.attributes -> {key}) = {json_type} "
        "THEN (f.attributes ->> {key})::{cast} END)"
    ).format(key=sql.Literal(key), json_type=sql.Literal(json_type), cast=sql.SQL(cast[kind]))


#: what every facility has, whatever its layer (only what SQL filters exactly: open_now and
#: live status are computed per response, so they are not queryable)
COMMON = (
    Queryable(GEOMETRY, GEOMETRY, sql.SQL("f.geom"), "the facility's position"),
    Queryable("name", "string", _column("name"), "name"),
    Queryable("name_en", "string", _column("name_en"), "name in English"),
    Queryable("address", "string", _column("address"), "address"),
    Queryable("phone", "string", _column("phone"), "phone number"),
    Queryable("website", "string", _column("website"), "website"),
    Queryable(
        "opening_hours",
        "string",
        sql.SQL("coalesce(f.opening_hours, f.opening_hours_raw)"),
        "opening hours (OSM opening_hours syntax when it parses)",
    ),
    Queryable("accessible", "boolean", _column("accessible"), "wheelchair accessible"),
    Queryable(
        "status",
        "string",
        _column("status"),
        "status",
        enum=tuple(s for s in facility.STATUSES if s != "removed"),
    ),
    Queryable("status_reason", "string", _column("status_reason"), "why closed"),
    Queryable("source", "string", _column("source"), "data source"),
    Queryable("source_id", "string", _column("source_id"), "the row's id in its source"),
    Queryable("updated_at", "date-time", _column("updated_at"), "last changed"),
    Queryable("verified_at", "date-time", _column("verified_at"), "last verified"),
)

_SCALAR_KINDS = ("string", "boolean", "integer", "number")


def _attribute_queryables(layer: layers.Layer) -> list[Queryable]:
    """The layer's scalar attributes (arrays and objects cannot be compared)."""
    taken = {q.name for q in COMMON}
    found = []
    for key, prop in layer.attribute_schema().get("properties", {}).items():
        options = prop.get("anyOf", [prop])
        kinds = [o for o in options if o.get("type") in _SCALAR_KINDS]
        if len(kinds) != 1 or key in taken:
            continue
        kind = kinds[0]["type"]
        enum = tuple(kinds[0]["enum"]) if "enum" in kinds[0] else None
        title = str(prop.get("title", key))
        found.append(Queryable(key, kind, _attribute(key, kind), title, enum))
    return found


@dataclass
class Queryables:
    """A layer's queryables by name."""

    layer: layers.Layer
    by_name: dict[str, Queryable] = field(default_factory=dict)

    def schema(self, href: str) -> dict[str, Any]:
        """The JSON Schema document of ``/collections/{layer}/queryables``."""
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": href,
            "type": "object",
            "title": self.layer.name("en"),
            "description": "Properties a filter may name (attributes at the top level)",
            "properties": {name: q.schema() for name, q in self.by_name.items()},
            "additionalProperties": False,
            # the draft's list form, which GDAL ≤ 3.6 reads to decide what it may push down
            "queryables": [
                {"id": name, "type": q.schema().get("type", GEOMETRY)}
                for name, q in self.by_name.items()
            ],
        }


_QUERYABLES: dict[str, Queryables] = {}


def queryables(layer: layers.Layer) -> Queryables:
    """The queryables of a layer (built once)."""
    if layer.key not in _QUERYABLES:
        found = Queryables(layer)
        for queryable in [*COMMON, *_attribute_queryables(layer)]:
            found.by_name[queryable.name] = queryable
        _QUERYABLES[layer.key] = found
    return _QUERYABLES[layer.key]


@dataclass
class Compiled:
    """A filter as an SQL condition and the parameters it binds (named ``cql_0``, ``cql_1`` …)."""

    condition: sql.Composable
    params: dict[str, Any]


def parse_filter(
    text: str, lang: str | None, layer: layers.Layer, crs: str | None = None
) -> Compiled:
    """Parse and compile the ``filter`` parameter; InvalidFilter (400) naming where it is wrong."""
    lang = lang or "cql2-text"
    if lang not in LANGUAGES:
        raise InvalidFilter(
            f"filter-lang {lang!r} is not supported; use one of: {', '.join(LANGUAGES[:2])}"
        )
    if crs not in (None, "", "http://www.opengis.net/def/crs/OGC/1.3/CRS84"):
        raise InvalidFilter(
            "filter-crs: only http://www.opengis.net/def/crs/OGC/1.3/CRS84 is supported"
        )
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidFilter(f"filter is longer than {MAX_FILTER_LENGTH:,} characters")
    if not text.strip():
        raise InvalidFilter("filter is empty")
    tree = _parse_json(text) if lang == "cql2-json" else _parse_text(text)
    compiler = _Compiler(queryables(layer), text, json=lang == "cql2-json")
    return Compiled(compiler.condition(tree), compiler.params)


def _parse_text(text: str) -> Any:
    try:
        return parse_cql2_text(text)
    except UnexpectedInput as exc:
        token = getattr(exc, "token", None)
        if isinstance(exc, UnexpectedEOF) or getattr(token, "type", None) == "$END":
            raise InvalidFilter(
                f"filter: CQL2 text ends at character {len(text.rstrip())} before the"
                " expression is complete"
            ) from None
        line, column = exc.line, exc.column
        near = text[max(0, exc.pos_in_stream or 0) :][:20] if exc.pos_in_stream else ""
        where = f"line {line}, column {column}" if line and line > 1 else f"character {column}"
        found = f" near {near!r}" if near else ""
        raise InvalidFilter(f"filter: CQL2 text does not parse at {where}{found}") from None
    except (LarkError, ValueError, TypeError, KeyError) as exc:
        raise InvalidFilter(f"filter: CQL2 text does not parse: {_reason(exc)}") from None


def _parse_json(text: str) -> Any:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidFilter(
            f"filter: not JSON at line {exc.lineno}, column {exc.colno} (character {exc.pos + 1}):"
            f" {exc.msg}"
        ) from None
    try:
        return parse_cql2_json(document)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        path = _json_error_path(document, "")
        raise InvalidFilter(
            f"filter: not a CQL2 JSON expression at {path or '/'} (JSON pointer): {_reason(exc)}"
        ) from None


def _json_error_path(node: Any, path: str) -> str:
    """JSON pointer of the innermost part of a CQL2 JSON document that does not parse."""
    if isinstance(node, dict) and isinstance(node.get("args"), list):
        for i, arg in enumerate(node["args"]):
            if isinstance(arg, (dict, list)):
                try:
                    parse_cql2_json(arg) if isinstance(arg, dict) else [
                        parse_cql2_json(a) for a in arg if isinstance(a, dict)
                    ]
                except (ValueError, TypeError, KeyError, IndexError, AttributeError):
                    return _json_error_path(arg, f"{path}/args/{i}")
    return path


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


#: SQL of each comparison operator
_COMPARISONS: dict[type[ast.Node], str] = {
    ast.Equal: "=",
    ast.NotEqual: "<>",
    ast.LessThan: "<",
    ast.LessEqual: "<=",
    ast.GreaterThan: ">",
    ast.GreaterEqual: ">=",
}
_NUMERIC = ("integer", "number")


@dataclass
class _Operand:
    """A compiled scalar: its SQL and its kind (a queryable's, or the literal's)."""

    sql: sql.Composable
    kind: str
    #: the Python value, for literals (None for properties and functions)
    literal: Any = None
    is_literal: bool = False
    name: str | None = None


class _Compiler:
    """One filter's compilation: SQL with named placeholders and their values."""

    def __init__(self, found: Queryables, text: str, *, json: bool) -> None:
        self.queryables = found
        self.text = text
        self.json = json
        self.params: dict[str, Any] = {}

    # -- helpers ------------------------------------------------------------------------------
    def bind(self, value: Any) -> sql.Composable:
        if len(self.params) >= MAX_NODES:
            raise InvalidFilter(f"filter: more than {MAX_NODES} values")
        name = f"cql_{len(self.params)}"
        self.params[name] = value
        return sql.Placeholder(name)

    def where(self, needle: str) -> str:
        """' at character N' where `needle` first appears in the filter (or '')."""
        match = re.search(r"(?<![\w.:])" + re.escape(needle) + r"(?![\w.:])", self.text)
        return f" at character {match.start() + 1}" if match else ""

    def property(self, name: str) -> Queryable:
        queryable = self.queryables.by_name.get(name)
        if queryable is None:
            raise InvalidFilter(
                f"filter: unknown property {name!r}{self.where(name)}; queryables of "
                f"{self.queryables.layer.key!r}: {', '.join(self.queryables.by_name)}"
            )
        return queryable

    # -- conditions ---------------------------------------------------------------------------
    def condition(self, node: Any) -> sql.Composable:
        if isinstance(node, ast.Not):
            return sql.SQL("(NOT {})").format(self.condition(node.sub_node))
        if isinstance(node, ast.And | ast.Or):
            joiner = " AND " if isinstance(node, ast.And) else " OR "
            return sql.SQL("({})").format(
                sql.SQL(joiner).join([self.condition(node.lhs), self.condition(node.rhs)])
            )
        if isinstance(node, ast.Include):
            return sql.SQL("false" if node.not_ else "true")
        if isinstance(node, ast.Comparison):
            return self.comparison(node)
        if isinstance(node, ast.Between):
            return self.between(node)
        if isinstance(node, ast.Like):
            return self.like(node)
        if isinstance(node, ast.In):
            return self.in_(node)
        if isinstance(node, ast.IsNull):
            operand = self.operand(node.lhs)
            return sql.SQL("({} IS {}NULL)").format(
                operand.sql, sql.SQL("NOT " if node.not_ else "")
            )
        if isinstance(node, ast.GeometryIntersects | ast.BBox):
            return self.intersects(node)
        if isinstance(node, bool):
            return sql.SQL("true" if node else "false")
        if isinstance(node, ast.Attribute):
            queryable = self.property(node.name)
            if queryable.kind == "boolean":
                return sql.SQL("({} IS TRUE)").format(queryable.expression)
        raise InvalidFilter(f"filter: {_describe(node)} is not supported{self.locate(node)}")

    def locate(self, node: Any) -> str:
        if isinstance(node, ast.Node):
            name = type(node).__name__
            keyword = {
                "TimeBefore": "T_BEFORE",
                "TimeAfter": "T_AFTER",
                "GeometryWithin": "S_WITHIN",
                "GeometryContains": "S_CONTAINS",
                "GeometryDisjoint": "S_DISJOINT",
                "Exists": "EXISTS",
            }.get(name)
            if keyword:
                found = self.text.upper().find(keyword)
                if found >= 0:
                    return f" at character {found + 1}"
        return ""

    def comparison(self, node: ast.Comparison) -> sql.Composable:
        op = _COMPARISONS[type(node)]
        lhs, rhs = self.operand(node.lhs), self.operand(node.rhs)
        lhs, rhs = self.unify(lhs, rhs, op), self.unify(rhs, lhs, op)
        if op not in ("=", "<>") and lhs.kind == "boolean":
            raise InvalidFilter(f"filter: {op} does not compare booleans{self.named(lhs, rhs)}")
        return sql.SQL("({} {} {})").format(lhs.sql, sql.SQL(op), rhs.sql)

    def between(self, node: ast.Between) -> sql.Composable:
        value = self.operand(node.lhs)
        low = self.unify(self.operand(node.low), value, "BETWEEN")
        high = self.unify(self.operand(node.high), value, "BETWEEN")
        value = self.unify(value, low, "BETWEEN")
        if value.kind not in (*_NUMERIC, "date-time", "string"):
            raise InvalidFilter(f"filter: BETWEEN needs numbers{self.named(value, low)}")
        return sql.SQL("({} {}BETWEEN {} AND {})").format(
            value.sql, sql.SQL("NOT " if node.not_ else ""), low.sql, high.sql
        )

    def like(self, node: ast.Like) -> sql.Composable:
        value = self.operand(node.lhs)
        pattern = node.pattern
        if isinstance(pattern, ast.Function):  # CASEI('pattern')
            pattern_sql = self.operand(pattern)
            if pattern_sql.kind != "string":
                raise InvalidFilter(f"filter: LIKE needs a text pattern{self.named(value)}")
            pattern_out: sql.Composable = pattern_sql.sql
        elif isinstance(pattern, str):
            # CQL2 patterns are PostgreSQL's: % any, _ one character, \ escapes
            pattern_out = self.bind(pattern)
        else:
            raise InvalidFilter(f"filter: LIKE needs a text pattern{self.named(value)}")
        if value.kind != "string":
            raise InvalidFilter(f"filter: LIKE compares text{self.named(value)}")
        op = ("NOT " if node.not_ else "") + ("ILIKE" if node.nocase else "LIKE")
        return sql.SQL("({} {} {})").format(value.sql, sql.SQL(op), pattern_out)

    def in_(self, node: ast.In) -> sql.Composable:
        value = self.operand(node.lhs)
        if not node.sub_nodes:
            raise InvalidFilter(f"filter: IN needs at least one value{self.named(value)}")
        if len(node.sub_nodes) > MAX_NODES:
            raise InvalidFilter(f"filter: IN takes at most {MAX_NODES} values")
        options = [self.unify(self.operand(o), value, "IN") for o in node.sub_nodes]
        value = self.unify(value, options[0], "IN")
        return sql.SQL("({} {}IN ({}))").format(
            value.sql,
            sql.SQL("NOT " if node.not_ else ""),
            sql.SQL(", ").join(o.sql for o in options),
        )

    def intersects(self, node: ast.GeometryIntersects | ast.BBox) -> sql.Composable:
        if isinstance(node, ast.BBox):
            prop = node.lhs
            shape = ast.Function("bbox", [node.minx, node.miny, node.maxx, node.maxy])
            if node.crs not in (None, "", "http://www.opengis.net/def/crs/OGC/1.3/CRS84"):
                raise InvalidFilter("filter: BBOX takes CRS84 coordinates only")
        else:
            prop, shape = node.lhs, node.rhs
            if not isinstance(prop, ast.Attribute):
                prop, shape = shape, prop
        if not isinstance(prop, ast.Attribute) or self.property(prop.name).kind != GEOMETRY:
            raise InvalidFilter(
                f"filter: S_INTERSECTS compares the property {GEOMETRY!r} with a geometry"
                f"{self.where('S_INTERSECTS') or self.where('BBOX')}"
            )
        return sql.SQL("ST_Intersects(f.geom, ST_GeomFromWKB({}, 4326))").format(
            self.bind(self.geometry(shape))
        )

    def geometry(self, shape: Any) -> bytes:
        """A geometry literal as WKB (validated here, so PostGIS never sees a bad one)."""
        geometry: shapely.Geometry
        try:
            if isinstance(shape, values.Envelope):
                if not self.json:
                    raise ValueError("write a box as BBOX(west, south, east, north)")
                # pygeofilter keeps a CQL2 JSON {"bbox": [w, s, e, n]} in x1, x2, y1, y2
                west, south, east, north = shape.x1, shape.x2, shape.y1, shape.y2
                if not (west <= east and south <= north):
                    raise ValueError("an envelope needs west ≤ east and south ≤ north")
                geometry = shapely.geometry.box(west, south, east, north)
            elif isinstance(shape, ast.Function) and shape.name.lower() == "bbox":
                # CQL2 text's BBOX(west, south, east, north) literal (or with heights: 6)
                numbers = [float(n) for n in shape.arguments]
                if len(numbers) == 6:
                    numbers = [numbers[0], numbers[1], numbers[3], numbers[4]]
                if len(numbers) != 4:
                    raise ValueError("BBOX takes 4 (or 6) numbers")
                west, south, east, north = numbers
                if not (west <= east and south <= north):
                    raise ValueError("a BBOX needs west ≤ east and south ≤ north")
                geometry = shapely.geometry.box(west, south, east, north)
            elif isinstance(shape, values.Geometry):
                geometry = shapely.geometry.shape(shape.geometry)
            else:
                raise ValueError(f"{_describe(shape)} is not a geometry")
            if geometry.is_empty or not all(
                -180 <= x <= 180 and -90 <= y <= 90 for x, y in _coordinates(geometry)
            ):
                raise ValueError("coordinates must be lon/lat in CRS84")
        except (ValueError, TypeError, KeyError, IndexError, shapely.errors.ShapelyError) as exc:
            raise InvalidFilter(
                f"filter: bad geometry{self.where('S_INTERSECTS')}: {_reason(exc)}"
            ) from None
        return bytes(shapely.to_wkb(geometry))

    # -- operands -----------------------------------------------------------------------------
    def operand(self, node: Any) -> _Operand:
        if isinstance(node, ast.Attribute):
            queryable = self.property(node.name)
            if queryable.kind == GEOMETRY:
                raise InvalidFilter(
                    f"filter: {node.name!r} is a geometry: use S_INTERSECTS{self.where(node.name)}"
                )
            return _Operand(queryable.expression, queryable.kind, name=node.name)
        if isinstance(node, ast.Function) and node.name.lower() in ("lower", "casei"):
            if len(node.arguments) != 1:
                raise InvalidFilter("filter: CASEI takes one argument")
            inner = self.operand(node.arguments[0])
            if inner.kind != "string":
                raise InvalidFilter(f"filter: CASEI takes text{self.named(inner)}")
            argument = self.bind(inner.literal) if inner.is_literal else inner.sql
            return _Operand(sql.SQL("lower({})").format(argument), "string", name=inner.name)
        if isinstance(node, bool):
            return _Operand(sql.SQL(""), "boolean", literal=node, is_literal=True)
        if isinstance(node, int | float):
            kind = "integer" if isinstance(node, int) else "number"
            return _Operand(sql.SQL(""), kind, literal=node, is_literal=True)
        if isinstance(node, str):
            return _Operand(sql.SQL(""), "string", literal=node, is_literal=True)
        if isinstance(node, datetime | date):
            return _Operand(sql.SQL(""), "date-time", literal=_instant(node), is_literal=True)
        raise InvalidFilter(f"filter: {_describe(node)} is not supported{self.locate(node)}")

    def unify(self, this: _Operand, other: _Operand, op: str) -> _Operand:
        """`this` bound (if a literal) as the type of `other`; InvalidFilter when they differ."""
        if not this.is_literal:
            if other.is_literal or this.kind == other.kind:
                return this
            if this.kind in _NUMERIC and other.kind in _NUMERIC:
                return this
            raise InvalidFilter(
                f"filter: {op} mixes {this.kind} and {other.kind}{self.named(this, other)}"
            )
        value, target = this.literal, other.kind if not other.is_literal else this.kind
        if target == "boolean" and isinstance(value, int) and not isinstance(value, bool):
            # OGR SQL (GDAL) writes booleans as 0 and 1
            if value in (0, 1):
                value = bool(value)
        elif target == "date-time" and isinstance(value, str):
            try:
                value = _instant(datetime.fromisoformat(value.replace("Z", "+00:00")))
            except ValueError:
                raise InvalidFilter(
                    f"filter: {value!r} is not an RFC 3339 timestamp{self.named(other)}"
                ) from None
        kind = _kind(value)
        compatible = kind == target or (kind in _NUMERIC and target in _NUMERIC)
        if not compatible:
            raise InvalidFilter(
                f"filter: {op} compares {target} with {value!r} ({kind}){self.named(other)}"
            )
        return _Operand(self.bind(value), target, literal=value, is_literal=True)

    def named(self, *operands: _Operand) -> str:
        for operand in operands:
            if operand.name:
                return f" (property {operand.name!r}{self.where(operand.name)})"
        return ""


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, datetime):
        return "date-time"
    return "string"


def _instant(value: datetime | date) -> datetime:
    """A timestamp with a time zone (a date is its midnight in UTC, as CQL2 reads it)."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0), tzinfo=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def _coordinates(geometry: Any) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in shapely.get_coordinates(geometry)]


def _describe(node: Any) -> str:
    if isinstance(node, ast.Node):
        return type(node).__name__
    return f"{type(node).__name__} {node!r}"[:80]
