"""/api/v1/nearest from far away (issue 13, section 5): exact, and no dearer than from nearby.

From the district's antipode the old fetch widened towards 20,000 candidates (3.6 s) and, on
larger tables, stopped there unproven. Far points now take their bound from the H3 cells that
hold facilities. Proven here against brute force over every facility (pyproj's geodesic) with
hypothesis: points anywhere, on other continents, at the antipode and across the antimeridian;
facilities clustered in the district, spread worldwide and along the antimeridian, most with
their cells counted and some still queued. The far path's counts kept per process
(``CellCache``) are exercised across examples and across changes to the facilities; the
geometry it rests on (finer cells meeting a cell's disc, lon/lat boxes around discs) is
checked on its own, at the poles, pentagons and the antimeridian; filters, ties and k up to
the maximum from far points against brute force too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import h3 as h3lib
import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from geoservice.query import nearest as nearest_module
from geoservice.query.h3sync import sync_cells
from geoservice.query.nearest import MAX_K, CellCache, Filters, nearest_facilities
from layers.hours import open_now
from tests.conftest import settings_for
from tests.geoservice.test_nearest import (
    LAYERS,
    all_facilities,
    assert_matches,
    brute_force,
    insert_facilities,
)

DISTRICT = (114.09, 22.52, 114.23, 22.62)
ANTIPODE = (-22.57, -65.84)  # (lat, lon) of the district's centre's antipode


def _rows(rng: np.random.Generator) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    n = 1500
    for i, (lon, lat) in enumerate(
        zip(
            rng.uniform(DISTRICT[0], DISTRICT[2], n),
            rng.uniform(DISTRICT[1], DISTRICT[3], n),
            strict=True,
        )
    ):
        rows.append({"id": f"d{i}", "lon": float(lon), "lat": float(lat)})
    lats = np.degrees(np.arcsin(rng.uniform(-0.98, 0.98, 150)))
    for i, (lat, lon) in enumerate(zip(lats, rng.uniform(-180, 180, 150), strict=True)):
        rows.append({"id": f"w{i}", "lon": float(lon), "lat": float(lat)})
    for i, lat in enumerate(rng.uniform(-60, 60, 30)):
        lon = float(rng.choice([-179.9999, 179.9999, -179.5, 179.5, 180.0]))
        rows.append({"id": f"m{i}", "lon": lon, "lat": float(lat)})
    # a cluster around the antipode too
    for i in range(20):
        rows.append(
            {
                "id": f"a{i}",
                "lon": ANTIPODE[1] + float(rng.normal(0, 0.05)),
                "lat": ANTIPODE[0] + float(rng.normal(0, 0.05)),
            }
        )
    for row in rows:
        row["layer"] = LAYERS[int(rng.integers(0, len(LAYERS)))]
    return rows


async def _sync(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(
        url, row_factory=dict_row, autocommit=True
    ) as conn:
        while await sync_cells(conn):
            pass


@pytest.fixture(scope="module")
def world(make_db: Callable[[], str]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    url = make_db()
    rng = np.random.default_rng(13)
    rows = _rows(rng)
    queued = rows[-40:]  # these stay in h3_pending: the far path must still see them
    insert_facilities(url, rows[:-40])
    asyncio.run(_sync(url))
    insert_facilities(url, queued)
    with psycopg.connect(url) as conn:
        pending = conn.execute("SELECT count(*) FROM h3_pending").fetchone()
    assert pending is not None and pending[0] == len(queued)
    yield url, all_facilities(url)


@pytest.fixture(scope="module")
def district(make_db: Callable[[], str]) -> str:
    """1,500 facilities in the district only, their cells counted but for 20 queued."""
    url = make_db()
    rng = np.random.default_rng(17)
    rows = [r for r in _rows(rng) if str(r["id"]).startswith("d")]
    insert_facilities(url, rows[:-20])
    asyncio.run(_sync(url))
    insert_facilities(url, rows[-20:])  # queued: their cells are not counted yet
    return url


async def _nearest(
    url: str, lat: float, lon: float, filters: Filters, cells: CellCache | None = None
) -> list[tuple[str, float]]:
    async with await psycopg.AsyncConnection.connect(
        url, row_factory=dict_row, autocommit=True
    ) as conn:
        rows = await nearest_facilities(conn, lat, lon, filters, settings_for(url), cells=cells)
    return [(str(r["id"]), float(r["distance_m"])) for r in rows]


#: one kept-counts cache per database, shared by the examples as a process shares it
CACHES: dict[str, CellCache] = {}


#: the district database's facilities, read once
DISTRICT_FACILITIES: dict[str, list[dict[str, Any]]] = {}
#: how often each example above took the far path
FAR_CALLS: list[int] = []

far_points = st.one_of(
    # anywhere on Earth
    st.tuples(st.floats(-90, 90), st.floats(-180, 180)),
    # near the district's antipode, where the sphere and ellipsoid orders differ most
    st.tuples(st.floats(ANTIPODE[0] - 0.5, ANTIPODE[0] + 0.5), st.floats(-66.5, -65.2)),
    # across the antimeridian
    st.tuples(st.floats(-70, 70), st.sampled_from([-180.0, -179.99, 179.99, 180.0])),
    # other continents: Beijing, Paris, São Paulo, New York, Sydney, Nairobi
    st.sampled_from(
        [
            (39.9, 116.4),
            (48.85, 2.35),
            (-23.55, -46.63),
            (40.71, -74.0),
            (-33.87, 151.2),
            (-1.29, 36.82),
            (-22.55, -65.88),
        ]
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    point=far_points,
    k=st.sampled_from([1, 2, 5, 20]),
    layers=st.sampled_from([LAYERS, ["toilet"], ["school", "clinic"]]),
)
def test_nearest_from_anywhere_equals_brute_force(
    world: tuple[str, list[dict[str, Any]]],
    district: str,
    point: tuple[float, float],
    k: int,
    layers: list[str],
) -> None:
    lat, lon = point
    for url, facilities in (world, (district, DISTRICT_FACILITIES.setdefault(district, []))):
        if not facilities:
            facilities.extend(all_facilities(url))
        subset = [f for f in facilities if f["layer"] in layers]
        with mock.patch.object(nearest_module, "_far", wraps=nearest_module._far) as far:
            got = asyncio.run(_nearest(url, lat, lon, Filters(layers=layers, k=k)))
        FAR_CALLS.append(far.call_count)
        assert_matches(got, brute_force(subset, lat, lon, k))
        # and again with the counts an earlier example kept
        cache = CACHES.setdefault(url, CellCache())
        kept = asyncio.run(_nearest(url, lat, lon, Filters(layers=layers, k=k), cache))
        assert_matches(kept, brute_force(subset, lat, lon, k))


def test_the_far_path_was_proven_above() -> None:
    # most points on Earth are far from every facility relative to the sphere's 1 % bound
    assert sum(FAR_CALLS) >= 20, FAR_CALLS


def _statements(monkeypatch: pytest.MonkeyPatch, params: list[Any] | None = None) -> list[str]:
    """The text of every statement run from now on (and their parameters into `params`)."""
    statements: list[str] = []
    real_execute = psycopg.AsyncConnection.execute

    async def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(query))
        if params is not None:
            params.append(args[0] if args else None)
        return await real_execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", execute)
    return statements


@pytest.mark.parametrize("point", [(-22.55, -65.88), (39.9, 116.4), (48.85, 2.35)])
def test_far_points_read_a_few_facilities_not_all(
    district: str, point: tuple[float, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the antipode the old loop fetched 8, 32, 128, 512, then 2,048 candidates; now
    the index's 8, then the facilities of a few small cells once."""
    params: list[Any] = []
    statements = _statements(monkeypatch, params)
    lat, lon = point
    got = asyncio.run(_nearest(district, lat, lon, Filters(layers=LAYERS, k=5)))
    assert_matches(got, brute_force(all_facilities(district), lat, lon, 5))
    limits = [int(m) for q in statements for m in re.findall(r"LIMIT (\d+)\s*\) c", q)]
    assert limits and max(limits) <= 8, limits
    boxes = [p["x0"].count(",") + 1 for p in params if isinstance(p, dict) and "x0" in p]
    assert len(boxes) == 1 and boxes[0] <= 2 * nearest_module.FINE_FACILITIES, boxes


def test_kept_counts_follow_every_change(
    make_db: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process keeps the counts it read; facilities added, queued, synced, moved or removed
    after that are still ranked exactly, and unchanged facilities cost one statement."""
    url = make_db()
    rng = np.random.default_rng(29)
    rows = [r for r in _rows(rng) if str(r["id"]).startswith("d")][:600]
    insert_facilities(url, rows)
    asyncio.run(_sync(url))
    cache = CellCache()
    lat, lon = 39.9, 116.4  # Beijing: the district's north-east corner is nearest

    def check(step: str) -> list[tuple[str, float]]:
        got = asyncio.run(_nearest(url, lat, lon, Filters(layers=LAYERS, k=5), cache))
        assert_matches(got, brute_force(all_facilities(url), lat, lon, 5))
        return got

    check("first: counts read in a snapshot and kept")
    statements = _statements(monkeypatch)
    check("unchanged: kept counts")
    # the index's order first (no Extent here), then one statement: the candidates with
    # their snapshot's state; no counts read again, no transaction
    far = [q for q in statements if "snapshot_version" in q]
    assert len(far) == 1, statements
    assert not [q for q in statements if "h3_counts" in q or "TRANSACTION" in q], statements
    # a facility nearer than all, still queued (its cell not counted)
    insert_facilities(url, [{"id": "new", "lon": 114.2299, "lat": 22.6199, "layer": "toilet"}])
    assert check("queued")[0][0] == "new"
    asyncio.run(_sync(url))
    assert check("synced")[0][0] == "new"
    with psycopg.connect(url, autocommit=True) as conn:
        # moved to the far side of the district (queued again), then its old place's cell
        # counted without it after a sync
        conn.execute(
            "UPDATE facilities SET geom = ST_SetSRID(ST_MakePoint(114.09, 22.52), 4326)"
            " WHERE id = 'new'"
        )
    assert "new" not in {i for i, _ in check("moved")}
    asyncio.run(_sync(url))
    check("moved and synced")
    nearest_id = check("before removal")[0][0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE facilities SET status = 'removed' WHERE id = %s", (nearest_id,))
    assert nearest_id not in {i for i, _ in check("removed")}
    asyncio.run(_sync(url))
    assert nearest_id not in {i for i, _ in check("removed and synced")}


@pytest.fixture(scope="module")
def attributed(make_db: Callable[[], str]) -> tuple[str, list[dict[str, Any]]]:
    """Facilities worldwide and in the district with hours, accessibility and ties."""
    url = make_db()
    rng = np.random.default_rng(31)
    hours = ["Mo-Fr 09:00-17:00", "24/7", None, "Sa-Su 10:00-12:00", "not hours"]
    rows = _rows(rng)
    # twelve on one spot at the district's north-east corner: ties from the north and east
    rows += [{"id": f"tie{i}", "lon": 114.23, "lat": 22.62, "layer": "toilet"} for i in range(12)]
    for i, row in enumerate(rows):
        row["accessible"] = [True, False, None][i % 3]
        row["opening_hours"] = hours[i % len(hours)]
    insert_facilities(url, rows[:-30])
    asyncio.run(_sync(url))
    insert_facilities(url, rows[-30:])  # queued
    return url, all_facilities(url)


FAR_POINTS = [
    (-22.55, -65.88),  # the district's antipode
    (39.9, 116.4),  # Beijing
    (-33.87, 151.2),  # Sydney
    (-23.55, -46.63),  # São Paulo
    (89.99, 0.0),  # the poles
    (-89.99, 45.0),
    (10.0, 180.0),  # the antimeridian, both sides
    (-10.0, -179.999),
]


@pytest.mark.parametrize("point", FAR_POINTS)
def test_far_points_with_filters_ties_and_the_largest_k(
    attributed: tuple[str, list[dict[str, Any]]], point: tuple[float, float]
) -> None:
    url, facilities = attributed
    settings = settings_for(url)
    tz = settings.district.timezone
    now = datetime(2024, 5, 15, 10, 0, tzinfo=ZoneInfo(tz))  # a Wednesday morning
    lat, lon = point
    cache = CellCache()

    async def ask(filters: Filters) -> list[tuple[str, float]]:
        async with await psycopg.AsyncConnection.connect(
            url, row_factory=dict_row, autocommit=True
        ) as conn:
            rows = await nearest_facilities(conn, lat, lon, filters, settings, now=now, cells=cache)
        return [(str(r["id"]), float(r["distance_m"])) for r in rows]

    toilets = [f for f in facilities if f["layer"] == "toilet"]
    for k in (1, 12, MAX_K):
        assert_matches(
            asyncio.run(ask(Filters(layers=["toilet"], k=k))), brute_force(toilets, lat, lon, k)
        )
    opened = [f for f in facilities if open_now(f["opening_hours"], tz, now) is True]
    assert_matches(
        asyncio.run(ask(Filters(layers=LAYERS, k=7, open_now=True))),
        brute_force(opened, lat, lon, 7),
    )
    accessible = [f for f in toilets if f["accessible"] is True]
    assert_matches(
        asyncio.run(ask(Filters(layers=["toilet"], k=MAX_K, accessible=True))),
        brute_force(accessible, lat, lon, MAX_K),
    )
    # a radius that holds a few: from the nearest distance plus 500 km
    nearest = brute_force(facilities, lat, lon, 1)[0][1]
    radius = min(nearest + 500_000.0, nearest_module.MAX_DISTANCE_M)
    within = [p for p in brute_force(facilities, lat, lon, len(facilities)) if p[1] <= radius]
    assert_matches(
        asyncio.run(ask(Filters(layers=LAYERS, k=MAX_K, max_distance_m=radius))),
        within[:MAX_K],
    )


def test_ties_on_one_spot_from_afar(attributed: tuple[str, list[dict[str, Any]]]) -> None:
    """Twelve toilets on one spot: k reaching into them takes the nearest first, then ties."""
    url, facilities = attributed
    toilets = [f for f in facilities if f["layer"] == "toilet"]
    ties = {f"tie{i}" for i in range(12)}
    for lat, lon in [(60.0, 150.0), (39.9, 116.4), (-22.55, -65.88)]:
        ranked = brute_force(toilets, lat, lon, len(toilets))
        spot = next(d for i, d in ranked if i in ties)
        before = sum(1 for _, d in ranked if d < spot - 0.5)
        assert before + 12 <= MAX_K
        cache = CellCache()
        for taken in (1, 5, 12):
            k = before + taken
            got = asyncio.run(_nearest(url, lat, lon, Filters(layers=["toilet"], k=k), cache))
            assert_matches(got, ranked[:k])
            assert len({i for i, _ in got} & ties) == taken
            assert {i for i, d in got if d < spot - 0.5} == {i for i, d in ranked[:before]}


@settings(max_examples=150, deadline=None, database=None)
@given(
    centre=st.tuples(st.floats(-90, 90), st.floats(-180, 180)),
    resolution=st.integers(0, 13),
    step=st.integers(1, 2),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_cover_holds_every_finer_cell_meeting_the_disc(
    centre: tuple[float, float], resolution: int, step: int, seed: int
) -> None:
    """Points anywhere in a cell's disc (edge included) lie in a cell of the cover."""
    cell = h3lib.api.basic_int.latlng_to_cell(centre[0], centre[1], resolution)
    finer = min(resolution + step, 15)
    cells, discs = nearest_module._cover(cell, finer)
    lon, lat, radius = nearest_module._cell_disc(cell)
    rng = np.random.default_rng(seed)
    n = 400
    distance = radius * np.sqrt(rng.uniform(0, 1, n))
    distance[:40] = radius  # the rim
    to_lon, to_lat, _ = nearest_module.GEOD.fwd(
        np.full(n, lon), np.full(n, lat), rng.uniform(-180, 180, n), distance
    )
    covered = set(cells.tolist())
    for a, o in zip(to_lat, to_lon, strict=True):
        assert h3lib.api.basic_int.latlng_to_cell(float(a), float(o), finer) in covered
    assert discs.shape == (len(cells), 3)


def test_covers_at_the_pentagons() -> None:
    for resolution in (0, 3, 7):
        for pentagon in h3lib.api.basic_int.get_pentagons(resolution):
            cells, _ = nearest_module._cover(pentagon, resolution + 1)
            lon, lat, radius = nearest_module._cell_disc(pentagon)
            n = 200
            to_lon, to_lat, _ = nearest_module.GEOD.fwd(
                np.full(n, lon), np.full(n, lat), np.linspace(-180, 180, n), np.full(n, radius)
            )
            for a, o in zip(to_lat, to_lon, strict=True):
                cell = h3lib.api.basic_int.latlng_to_cell(float(a), float(o), resolution + 1)
                assert cell in set(cells.tolist())


#: centres anywhere, on the antimeridian, at the poles
WORLD_CENTRES = st.one_of(
    st.tuples(st.floats(-90, 90), st.floats(-180, 180)),
    st.tuples(st.floats(-90, 90), st.sampled_from([-180.0, -179.9999, 179.9999, 180.0])),
    st.tuples(st.sampled_from([-89.9999, -90.0, 89.9999, 90.0]), st.floats(-180, 180)),
)


def _points_within(
    lat: float, lon: float, radius: float, seed: int, n: int = 300
) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) of `n` points up to `radius` metres away on the ellipsoid, 30 right on it."""
    rng = np.random.default_rng(seed)
    distance = radius * np.sqrt(rng.uniform(0, 1, n))
    distance[:30] = radius
    to_lon, to_lat, _ = nearest_module.GEOD.fwd(
        np.full(n, lon), np.full(n, lat), rng.uniform(-180, 180, n), distance
    )
    return np.asarray(to_lat), np.asarray(to_lon)


@settings(max_examples=200, deadline=None, database=None)
@given(centre=WORLD_CENTRES, radius=st.floats(0.5, 2_000_000), seed=st.integers(0, 2**32 - 1))
def test_boxes_hold_their_discs(centre: tuple[float, float], radius: float, seed: int) -> None:
    """The far path's boxes, split at the antimeridian, and the near path's single box."""
    lat, lon = centre
    level = nearest_module._Level(
        0, np.zeros(1, np.int64), np.ones(1, np.int64), np.array([[lon, lat, radius]]),
        np.zeros(1),
    )  # fmt: skip
    x0, y0, x1, y1 = level.boxes(np.array([True]))
    west, south, east, north = nearest_module.disc_box(lon, lat, radius)
    to_lat, to_lon = _points_within(lat, lon, radius, seed)
    for a, o in zip(to_lat.tolist(), to_lon.tolist(), strict=True):
        assert any(
            w <= o <= e and s <= a <= nn for w, s, e, nn in zip(x0, y0, x1, y1, strict=True)
        ), (a, o, list(zip(x0, y0, x1, y1, strict=True)))
        assert west <= o <= east and south <= a <= north, (a, o, (west, south, east, north))


@settings(max_examples=300, deadline=None, database=None)
@given(
    centre=st.one_of(WORLD_CENTRES, st.tuples(st.floats(22.4, 22.7), st.floats(113.9, 114.4))),
    metres=st.floats(0.5, 2_000_000),
    seed=st.integers(0, 2**32 - 1),
)
def test_points_within_a_distance_lie_within_its_planar_reach(
    centre: tuple[float, float], metres: float, seed: int
) -> None:
    """The near path's bound: a point up to `metres` away on the ellipsoid is nearer than
    ``_planar_reach`` in the lon/lat plane, or the bound says it has none."""
    lat, lon = centre
    reach = nearest_module._planar_reach(lat, lon, metres)
    if abs(lat) < 60 and abs(lon) < 170 and metres < 100_000:
        assert reach is not None  # it always has one away from the poles and antimeridian
    if reach is None:
        return
    to_lat, to_lon = _points_within(lat, lon, metres, seed)
    planar = np.hypot(to_lon - lon, to_lat - lat)
    assert float(planar.max()) < reach, (float(planar.max()), reach)


def test_the_near_path_ranks_across_the_planes_distortion(
    make_db: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 60°N a degree of longitude is half one of latitude: the plane's order puts the
    facilities due north first, the ellipsoid those due east. The near path still ranks
    exactly, and proves it without the far path."""
    url = make_db()
    lat, lon = 60.0, 25.0
    rows = []
    for i in range(40):
        n_lon, n_lat, _ = nearest_module.GEOD.fwd(lon, lat, 0.0, 1_000.0 + 25 * i)
        e_lon, e_lat, _ = nearest_module.GEOD.fwd(lon, lat, 90.0, 600.0 + 25 * i)
        rows.append({"id": f"n{i:02d}", "lon": n_lon, "lat": n_lat})
        rows.append({"id": f"e{i:02d}", "lon": e_lon, "lat": e_lat})
    insert_facilities(url, rows)
    asyncio.run(_sync(url))
    facilities = all_facilities(url)
    statements = _statements(monkeypatch)
    for k in (1, 5, 16, 45, 80):
        got = asyncio.run(_nearest(url, lat, lon, Filters(layers=["toilet"], k=k)))
        assert_matches(got, brute_force(facilities, lat, lon, k))
        if k <= 16:  # due east up to 975 m, due north from 1,000 m
            assert all(i.startswith("e") for i, _ in got), got
    assert statements and not [q for q in statements if "snapshot_version" in q], statements


@pytest.mark.parametrize(
    "point", [(0.0, -179.9999), (0.0, 179.9999), (0.0005, 180.0), (89.9995, 10.0)]
)
def test_max_distance_across_the_antimeridian_and_at_a_pole(
    make_db: Callable[[], str], point: tuple[float, float]
) -> None:
    """The index's box for max_distance_m holds the disc across the antimeridian and over a
    pole (there: every longitude), so facilities just across are found and far ones are not."""
    url = make_db()
    rows = [
        {"id": "west", "lon": 179.9995, "lat": 0.0},
        {"id": "east", "lon": -179.999, "lat": 0.0},
        {"id": "far", "lon": 179.0, "lat": 0.0},
        {"id": "north", "lon": -170.0, "lat": 89.9999},
        {"id": "pole_far", "lon": 100.0, "lat": 89.5},
    ]
    insert_facilities(url, rows)
    asyncio.run(_sync(url))
    facilities = all_facilities(url)
    lat, lon = point
    for limit_m in (50.0, 300.0, 2_000.0, 200_000.0):
        for k in (1, 2, 5):
            got = asyncio.run(
                _nearest(url, lat, lon, Filters(layers=["toilet"], k=k, max_distance_m=limit_m))
            )
            expected = [(i, d) for i, d in brute_force(facilities, lat, lon, k) if d <= limit_m]
            assert_matches(got, expected)


def test_occupied_cells_are_all_read_when_layers_share_cells(
    make_db: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """h3_counts has a row per layer and cell: a limit on rows, not cells, cut the coarse
    level short when several layers share cells, and the far path then missed whole cells."""
    url = make_db()
    rng = np.random.default_rng(41)
    rows = []
    # twelve clusters a few km apart: the western six hold every layer but toilets, the
    # eastern six toilets only (so no layer's rows alone name every cell)
    for c in range(12):
        lon, lat = 114.0 + 0.05 * (c % 4), 22.5 + 0.05 * (c // 4)
        for layer in LAYERS if c % 4 < 2 else ["toilet"]:
            for i in range(3):
                rows.append(
                    {
                        "id": f"c{c}-{layer}-{i}",
                        "layer": layer,
                        "lon": lon + rng.normal(0, 0.001),
                        "lat": lat + rng.normal(0, 0.001),
                    }
                )
    insert_facilities(url, rows)
    asyncio.run(_sync(url))
    facilities = all_facilities(url)
    # fewer cells than (cell, layer) rows: 12 cells hold 30 rows at each resolution from 8 on
    monkeypatch.setattr(nearest_module, "MAX_CELLS", 12)
    for lat, lon in FAR_POINTS:
        for layers in (LAYERS, ["toilet", "school"]):
            subset = [f for f in facilities if f["layer"] in layers]
            for k in (1, 5):
                got = asyncio.run(_nearest(url, lat, lon, Filters(layers=layers, k=k)))
                assert_matches(got, brute_force(subset, lat, lon, k))
