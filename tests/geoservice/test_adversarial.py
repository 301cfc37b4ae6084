"""Defects an adversarial test found (issue 13, section 5), each pinned by a regression test.

- A NUL byte in any path or query parameter of any route is a 404 or 422, never a 500.
- Ratings are limited per network address too, and low-rating alerts count distinct raters.
- A chunked body over the limit is a 413 on every route; request headers are bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from geoservice.api.auth import new_token, token_hash
from geoservice.app import create_app
from geoservice.db.connection import connect
from geoservice.residents.signin import RESIDENT_PREFIX
from geoservice.toilets.admin import add_device, add_staff
from tests.geoservice.toilet_support import add_facilities, auth, toilet_settings

NUL = "a\x00b"

#: plausible values for path parameters, so the one under test is the only odd one
PATH_VALUES = {
    "facility_id": "toilet-a",
    "featureId": "toilet-a",
    "collectionId": "toilet",
    "tileMatrixSetId": "WebMercatorQuad",
    "tileMatrix": "14",
    "tileRow": "7148",
    "tileCol": "13384",
    "filename": "toilet.csv",
    "asset_path": "map.js",
}
#: values for the query parameters a route requires, so the one under test is reached
QUERY_VALUES = {"lat": "22.55", "lon": "114.12", "resolution": "8", "matter": "m1"}
#: a valid-looking body for routes that take one (the path or query is what is under test)
BODIES: dict[str, Any] = {
    "/api/v1/facilities/{facility_id}/ratings": {"score": 3},
    "/api/v1/staff/tickets/{ticket_id}/finish": {"outcome": "done"},
    "/api/v1/halls/{hall_id}/tickets": {"matter": "m1"},
    "/api/v1/cases/{code}/evaluation": {"score": 3},
    "/api/v1/appointments/{code}": {"start": "2030-01-07T09:00:00+08:00"},
}


@dataclass
class Env:
    url: str
    client: TestClient
    staff: dict[str, str]
    device: dict[str, str]
    resident: dict[str, str]


@pytest.fixture
def env(fresh_db: str) -> Iterator[Env]:
    add_facilities(fresh_db)
    with connect(fresh_db, autocommit=True) as conn:
        staff_token = add_staff(conn, "adversary-test")
        _, device_token = add_device(conn, "toilet-a", 2)
        resident_token = signed_in_resident(conn)
    app = create_app(toilet_settings(fresh_db))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Env(fresh_db, client, auth(staff_token), auth(device_token), auth(resident_token))


def signed_in_resident(conn: Any) -> str:
    """A resident's session token, stored as `POST /api/v1/residents/verify` stores one."""
    resident = conn.execute(
        "INSERT INTO residents (email, lang, consent_version, feed_key, mail_key)"
        " VALUES ('adversary@example.org', 'en', '1', 'feed-key-adversary', 'mail-key-adversary')"
        " RETURNING id"
    ).fetchone()
    token = new_token(RESIDENT_PREFIX)
    conn.execute(
        "INSERT INTO resident_sessions (token_hash, resident_id) VALUES (%s, %s)",
        (token_hash(token), resident["id"]),
    )
    return token


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every APIRoute of the app, also those of included routers."""
    found: list[APIRoute] = []

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.append(route)
            elif hasattr(route, "original_router"):  # FastAPI ≥ 0.16x keeps routers included
                walk(route.original_router.routes)
            elif hasattr(route, "routes"):
                walk(route.routes)

    walk(list(app.routes))
    return found


def _params(dependant: Any, kind: str) -> list[Any]:
    found = list(getattr(dependant, kind))
    for sub in dependant.dependencies:
        found += _params(sub, kind)
    return found


def nul_requests(app: FastAPI) -> list[tuple[str, str, dict[str, str], Any]]:
    """(method, url, query, body): a NUL in each path and each query parameter of each route."""
    cases: list[tuple[str, str, dict[str, str], Any]] = []
    for route in api_routes(app):
        path_names = [p.alias for p in _params(route.dependant, "path_params")]
        query_names = list(dict.fromkeys(p.alias for p in _params(route.dependant, "query_params")))
        required = {
            p.alias: QUERY_VALUES.get(p.alias, "1")
            for p in _params(route.dependant, "query_params")
            if p.field_info.is_required()
        }
        template = route.path.replace(":path}", "}")

        def url(nul_in: str | None, template: str = template, names: list[str] = path_names) -> str:
            values = {n: NUL if n == nul_in else PATH_VALUES.get(n, "x") for n in names}
            return template.format(**{n: quote(v, safe="") for n, v in values.items()})

        body = BODIES.get(route.path)
        for method in sorted(route.methods or ()):
            for name in path_names:
                cases.append((method, url(name), dict(required), body))
            for name in query_names:
                cases.append((method, url(None), {**required, name: NUL}, body))
    return cases


def test_every_route_answers_a_nul_byte_in_any_parameter_with_404_or_422(env: Env) -> None:
    app = env.client.app
    assert isinstance(app, FastAPI)
    cases = nul_requests(app)
    # the three routes the adversarial test found, among many
    urls = {(m, u) for m, u, _, _ in cases}
    assert ("GET", "/api/v1/toilets/a%00b/status") in urls
    assert ("POST", "/api/v1/facilities/a%00b/ratings") in urls
    assert ("POST", "/api/v1/staff/toilets/a%00b/cleaned") in urls
    assert len(cases) > 80
    failures = []
    for method, url, query, body in cases:
        headers = env.device if url.startswith("/api/v1/sensors") else env.staff
        if url.startswith("/api/v1/me"):
            headers = env.resident
        env.client.cookies.clear()
        answer = env.client.request(method, url, params=query, json=body, headers=headers)
        # an unknown id is a 404, a bad value a 422 (OGC: a bad CQL2 filter a 400); a query
        # parameter a route ignores in this combination may give a 200
        allowed = {404, 422} if "%00" in url else {200, 400, 404, 422}
        if answer.status_code not in allowed:
            failures.append(f"{method} {url} {query}: {answer.status_code} {answer.text[:80]}")
    assert not failures, "\n".join(failures)


def test_the_database_refusing_nul_is_recognised_client_and_server_side(fresh_db: str) -> None:
    import psycopg

    from geoservice.api.errors import is_nul_error

    with connect(fresh_db) as conn:
        with pytest.raises(psycopg.DataError) as client_side:
            conn.execute("SELECT %s::text", (NUL,))
        assert is_nul_error(client_side.value)
        conn.rollback()
        with pytest.raises(psycopg.DataError) as server_side:
            conn.execute("SELECT %s::jsonb", ('"a\\u0000b"',))
        assert is_nul_error(server_side.value)
        conn.rollback()
        with pytest.raises(psycopg.DataError) as other:
            conn.execute("SELECT 1 / 0")
        assert not is_nul_error(other.value)


@contextmanager
def from_address(client: TestClient, ip: str) -> Iterator[TestClient]:
    """Requests of `client` coming from network address `ip` (the ASGI scope's client)."""
    transport: Any = client._transport  # noqa: SLF001 - TestClient has no per-request address
    before = transport.client
    transport.client = (ip, 50000)
    try:
        yield client
    finally:
        transport.client = before


def rate(client: TestClient, facility: str, score: int, agent: str) -> int:
    client.cookies.clear()
    answer = client.post(
        f"/api/v1/facilities/{facility}/ratings",
        json={"score": score},
        headers={"User-Agent": agent},
    )
    return int(answer.status_code)


def low_rating_alerts(env: Env) -> list[dict[str, Any]]:
    answer = env.client.get(
        "/api/v1/staff/alerts", params={"kind": "low_rating"}, headers=env.staff
    )
    assert answer.status_code == 200, answer.text
    alerts: list[dict[str, Any]] = answer.json()["alerts"]
    return alerts


def test_changing_the_user_agent_does_not_get_round_the_rating_limit(env: Env) -> None:
    allowed = toilet_settings(env.url).toilets.ratings_per_address
    with from_address(env.client, "203.0.113.7") as client:
        codes = [rate(client, "toilet-a", 1, f"agent-{i}") for i in range(10)]
        # another facility from the same address is fine
        assert rate(client, "toilet-b", 3, "agent-0") == 201
    assert codes == [201] * allowed + [429] * (10 - allowed)
    # another address (another resident behind another NAT) is another rater
    with from_address(env.client, "198.51.100.9") as client:
        assert rate(client, "toilet-a", 4, "agent-0") == 201


def test_the_address_limit_answers_with_retry_after(env: Env) -> None:
    allowed = toilet_settings(env.url).toilets.ratings_per_address
    with from_address(env.client, "203.0.113.8") as client:
        for i in range(allowed):
            assert rate(client, "toilet-c", 2, f"ua-{i}") == 201
        client.cookies.clear()
        answer = client.post(
            "/api/v1/facilities/toilet-c/ratings", json={"score": 2}, headers={"User-Agent": "z"}
        )
    assert answer.status_code == 429
    assert int(answer.headers["retry-after"]) > 11 * 3600
    assert "network address" in answer.json()["detail"]


def test_one_address_cannot_raise_a_low_rating_alert(env: Env) -> None:
    # 11 score-1 ratings in a second from one address used to open an alert
    with from_address(env.client, "203.0.113.9") as client:
        for i in range(11):
            rate(client, "toilet-d", 1, f"bot-{i}")
    assert low_rating_alerts(env) == []
    # five residents on five addresses do
    minimum = toilet_settings(env.url).toilets.low_rating_min_count
    for i in range(minimum):
        with from_address(env.client, f"192.0.2.{i + 1}") as client:
            assert rate(client, "toilet-d", 2, "phone") == 201
    [alert] = low_rating_alerts(env)
    assert alert["facility_id"] == "toilet-d"
    # the bot's address is one rater among six, its ratings averaged first: (1 + 2 * 5) / 6
    assert alert["detail"] == {"average_30d": round(11 / 6, 2), "count_30d": minimum + 1}


def _chunks(total: int, size: int = 65_536) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        piece = b" " * min(size, total - sent)
        sent += len(piece)
        yield piece


def test_a_chunked_body_over_the_limit_is_a_413_on_every_route(env: Env) -> None:
    app = env.client.app
    assert isinstance(app, FastAPI)
    limit = toilet_settings(env.url).service.max_body_bytes
    failures = []
    for route in api_routes(app):
        values = {p.alias: PATH_VALUES.get(p.alias, "x") for p in route.dependant.path_params}
        url = route.path.replace(":path}", "}").format(**values)
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            # no Content-Length: httpx sends a generator as Transfer-Encoding: chunked
            answer = env.client.request(
                method,
                url,
                content=_chunks(limit + 1),
                headers={**env.staff, "Content-Type": "application/json"},
            )
            if answer.status_code != 413 or "larger than" not in answer.json()["detail"]:
                failures.append(f"{method} {url}: {answer.status_code} {answer.text[:80]}")
    assert not failures, "\n".join(failures)


def test_a_chunked_body_within_the_limit_still_arrives(env: Env) -> None:
    body = b'{"score": 4, "comment": "' + b"x" * 400 + b'"}'
    answer = env.client.post(
        "/api/v1/facilities/toilet-a/ratings",
        content=iter([body[:100], body[100:]]),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["comment"] == "x" * 400


def test_request_headers_are_bounded(env: Env) -> None:
    assert env.client.get("/healthz", headers={"X-Pad": "x" * 8_000}).status_code == 200
    big = env.client.get("/healthz", headers={"X-Pad": "x" * 20_000})
    assert big.status_code == 431 and "headers" in big.json()["detail"]
    many = env.client.get("/healthz", headers={f"X-Pad-{i}": "x" for i in range(150)})
    assert many.status_code == 431
    cookie = env.client.get("/", headers={"Cookie": "a=" + "x" * 40_000})
    assert cookie.status_code == 431


def _script_src(policy: str) -> list[str]:
    [directive] = [d.split() for d in policy.split(";") if d.split()[:1] == ["script-src"]]
    return directive[1:]


@pytest.mark.parametrize("path", ["/", "/staff", "/facilities/toilet-a", "/downloads"])
def test_pages_allow_their_own_inline_scripts_by_hash_never_unsafe_inline(
    env: Env, path: str
) -> None:
    import re

    from web.csp import inline_script_hashes

    answer = env.client.get(path)
    assert answer.status_code == 200, answer.text
    sources = _script_src(answer.headers["content-security-policy"])
    assert "'unsafe-inline'" not in sources and sources[0] == "'self'"
    inline = inline_script_hashes(answer.content)
    assert sources[1:] == inline
    if path != "/downloads":
        assert inline, "the page carries an inline script"
    # every inline script of the page is one of them: nothing else could run
    for match in re.finditer(rb"<script\b([^>]*)>(.*?)</script>", answer.content, re.S):
        if b"src=" not in match.group(1):
            assert inline_script_hashes(match.group(0))[0] in sources


def test_script_hashes_are_what_browsers_compute() -> None:
    from web.csp import inline_script_hashes, with_script_hashes

    page = b'<p>x</p><script src="/a.js"></script><SCRIPT type="module">\r\nrun()\r\n</script >'
    # sha256 of "\nrun()\n" (CR LF read as LF), base64
    assert inline_script_hashes(page) == ["'sha256-X8AAKgaI44zC2JgsZRJ4adpbl777tdE6qoD0mpUQwV4='"]
    policy = "default-src 'self'; script-src 'self'; style-src 'self'"
    assert with_script_hashes(policy, ["'sha256-x'"]) == (
        "default-src 'self'; script-src 'self' 'sha256-x'; style-src 'self'"
    )
    assert with_script_hashes("default-src 'self'", ["'sha256-x'"]) == (
        "default-src 'self'; script-src 'self' 'sha256-x'"
    )
