"""/api/v1/nearest from far away (issue 13, section 5): exact, and no dearer than from nearby.

From the district's antipode the old fetch widened towards 20,000 candidates (3.6 s) and, on
larger tables, stopped there unproven. Far points now take their bound from the H3 cells that
hold facilities. Proven here against brute force over every facility (pyproj's geodesic) with
hypothesis: points anywhere, on other continents, at the antipode and across the antimeridian;
facilities clustered in the district, spread worldwide and along the antimeridian, most with
their cells counted and some still queued.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from geoservice.query import nearest as nearest_module
from geoservice.query.h3 import sync_cells
from geoservice.query.nearest import Filters, nearest_facilities
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


async def _nearest(url: str, lat: float, lon: float, filters: Filters) -> list[tuple[str, float]]:
    async with await psycopg.AsyncConnection.connect(
        url, row_factory=dict_row, autocommit=True
    ) as conn:
        rows = await nearest_facilities(conn, lat, lon, filters, settings_for(url))
    return [(str(r["id"]), float(r["distance_m"])) for r in rows]


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


def test_the_far_path_was_proven_above() -> None:
    # most points on Earth are far from every facility relative to the sphere's 1 % bound
    assert sum(FAR_CALLS) >= 20, FAR_CALLS


@pytest.mark.parametrize("point", [(-22.55, -65.88), (39.9, 116.4), (48.85, 2.35)])
def test_far_points_read_a_few_facilities_not_all(
    district: str, point: tuple[float, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the antipode the old loop fetched 8, 32, 128, 512, then 2,048 candidates."""
    statements: list[str] = []
    real_execute = psycopg.AsyncConnection.execute

    async def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(query))
        return await real_execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", execute)
    lat, lon = point
    got = asyncio.run(_nearest(district, lat, lon, Filters(layers=LAYERS, k=5)))
    assert_matches(got, brute_force(all_facilities(district), lat, lon, 5))
    limits = [int(m) for q in statements for m in re.findall(r"LIMIT (\d+)\s*\) c", q)]
    assert limits and max(limits) <= 8, limits
