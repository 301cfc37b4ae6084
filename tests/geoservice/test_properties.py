"""Property-based: no parameter values, however odd, make the query API answer 500."""

from __future__ import annotations

from urllib.parse import quote

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

#: numbers as clients type them, plus junk
NUMBER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(["", "nan", "inf", "-inf", "1e400", "0x10", " 5", "5,5", "∞"]),
    st.text(max_size=30),
)
BBOX = st.one_of(
    st.lists(NUMBER, min_size=0, max_size=7).map(",".join),
    st.tuples(
        st.floats(-200, 200), st.floats(-100, 100), st.floats(-200, 200), st.floats(-100, 100)
    ).map(lambda t: ",".join(map(str, t))),
    st.text(max_size=60),
)
LAYER = st.one_of(
    st.sampled_from(["toilet", "school,clinic", "", ",", "zoo", "toilet,toilet"]),
    st.text(max_size=20),
)
BOOL = st.sampled_from(["true", "false", "1", "0", "yes", "maybe", ""])
COMMON = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _ok(status: int) -> bool:
    return status < 500 or status == 503


@COMMON
@given(lat=NUMBER, lon=NUMBER, k=NUMBER, layer=LAYER, dist=NUMBER, open_=BOOL, acc=BOOL)
def test_nearest_never_500(
    client: TestClient, lat: str, lon: str, k: str, layer: str, dist: str, open_: str, acc: str
) -> None:
    params = {"lat": lat, "lon": lon, "k": k, "layer": layer, "max_distance_m": dist}
    params |= {"open_now": open_, "accessible": acc}
    response = client.get("/api/v1/nearest", params=params)
    assert _ok(response.status_code), response.text
    if response.status_code == 422:
        assert isinstance(response.json()["detail"], str)


@COMMON
@given(
    resolution=NUMBER,
    bbox=BBOX,
    layer=LAYER,
    metric=st.sampled_from(["count", "x", "avg_rating", ""]),
)
def test_h3_never_500(
    client: TestClient, resolution: str, bbox: str, layer: str, metric: str
) -> None:
    params = {"resolution": resolution, "bbox": bbox, "layer": layer, "metric": metric}
    response = client.get("/api/v1/h3", params=params)
    assert _ok(response.status_code), response.text


@COMMON
@given(
    collection=st.one_of(
        st.sampled_from(["toilet", "school", "zoo"]), st.text(min_size=1, max_size=20)
    ),
    bbox=BBOX,
    limit=NUMBER,
    offset=NUMBER,
)
def test_ogc_items_never_500(
    client: TestClient, collection: str, bbox: str, limit: str, offset: str
) -> None:
    response = client.get(
        f"/ogc/collections/{quote(collection, safe='')}/items",
        params={"bbox": bbox, "limit": limit, "offset": offset},
    )
    assert _ok(response.status_code), response.text


@COMMON
@given(facility_id=st.text(min_size=1, max_size=300))
def test_facility_and_item_ids_never_500(client: TestClient, facility_id: str) -> None:
    segment = quote(facility_id, safe="")
    for path in (f"/api/v1/facilities/{segment}", f"/ogc/collections/toilet/items/{segment}"):
        response = client.get(path)
        assert _ok(response.status_code), response.text
