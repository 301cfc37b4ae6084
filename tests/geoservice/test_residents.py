"""Residents: password-less sign-in through a real SMTP server, subscriptions, the feed fanned out
from loads, Atom feeds, mail digests sent once (also across an interrupted run), export, erasure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import feedparser
import pytest
from fastapi.testclient import TestClient

from geoservice.api.auth import new_token, token_hash
from geoservice.app import create_app
from geoservice.db.connection import connect
from geoservice.residents.notify import prune
from geoservice.residents.notify import run as notify
from geoservice.settings import Settings
from ingest.disclosures import ingest_catalogue
from ingest.load import facility_id
from ingest.pipeline import ingest_file
from tests.conftest import load_sample, settings_for
from tests.geoservice import test_replicas
from tests.geoservice.residents_support import Mailbox, bearer, sign_up, smtp_server
from tests.geoservice.test_replicas import Pair, replica_settings, wait_for

MATTER = "M-EDU-001"
OTHER_MATTER = "M-HEA-004"
HOME = (22.5480, 114.1180)  # lat, lon


@pytest.fixture(scope="module")
def smtp() -> Iterator[tuple[Mailbox, str]]:
    """One SMTP server for the module."""
    with smtp_server() as server:
        yield server


@pytest.fixture(scope="module")
def residents_db(make_db: Callable[[], str], sample_dir: Path) -> str:
    """The sample district in a database of this module's own (it is changed by the tests)."""
    url = make_db()
    load_sample(url, sample_dir)
    return url


def residents_settings(url: str, smtp_url: str | None, **limits: Any) -> Settings:
    """Settings with mail through the test server (None: no mail server, codes to the log)."""
    settings = settings_for(url)
    settings.residents = settings.residents.model_copy(update={"smtp_url": smtp_url, **limits})
    return settings


@pytest.fixture(scope="module")
def api(residents_db: str, smtp: tuple[Mailbox, str]) -> Iterator[TestClient]:
    """A client of the app mailing through the test server."""
    with TestClient(create_app(residents_settings(residents_db, smtp[1]))) as client:
        yield client


# --- sign-in --------------------------------------------------------------------------------


def test_sign_in_by_mailed_code_gives_token_and_cookie(
    api: TestClient, smtp: tuple[Mailbox, str]
) -> None:
    mailbox = smtp[0]
    email = "Alice@Example.org"
    first = api.post("/api/v1/residents/sign-in", json={"email": email, "lang": "en"})
    assert first.status_code == 202
    code = mailbox.code_for("alice@example.org")
    # a new account needs consent; the code stays good meanwhile
    no_consent = api.post("/api/v1/residents/verify", json={"email": email, "code": code})
    assert no_consent.status_code == 422 and "consent" in no_consent.json()["detail"]
    consent = api.get("/api/v1/residents/consent?lang=en").json()
    assert "PIPL" in consent["text"]
    verified = api.post(
        "/api/v1/residents/verify",
        json={"email": email, "code": code, "consent": True, "lang": "en"},
    )
    assert verified.status_code == 200, verified.text
    token = verified.json()["token"]
    cookie = verified.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    me = api.get("/api/v1/me", headers=bearer(token)).json()
    assert me["email"] == "alice@example.org" and me["lang"] == "en"
    # the cookie alone works for pages, and a code is good once
    assert api.get("/api/v1/me").status_code == 200
    again = api.post(
        "/api/v1/residents/verify", json={"email": email, "code": code, "consent": True}
    )
    assert again.status_code == 401
    # sign-out revokes at once
    assert api.post("/api/v1/residents/sign-out").status_code == 204
    api.cookies.clear()
    assert api.get("/api/v1/me", headers=bearer(token)).status_code == 401
    assert api.get("/api/v1/me").status_code == 401


def test_known_and_unknown_addresses_get_the_same_answer(
    api: TestClient, smtp: tuple[Mailbox, str]
) -> None:
    sign_up(api, smtp[0], "known@example.org")
    known = api.post("/api/v1/residents/sign-in", json={"email": "known@example.org"})
    unknown = api.post("/api/v1/residents/sign-in", json={"email": "nobody@example.org"})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert (
        api.post("/api/v1/residents/sign-in", json={"email": "not-an-address"}).status_code == 422
    )


def test_wrong_and_expired_codes_and_limited_tries(
    api: TestClient, smtp: tuple[Mailbox, str], residents_db: str
) -> None:
    mailbox, email = smtp[0], "tries@example.org"
    api.post("/api/v1/residents/sign-in", json={"email": email})
    code = mailbox.code_for(email)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        answer = api.post("/api/v1/residents/verify",
                          json={"email": email, "code": wrong, "consent": True})  # fmt: skip
        assert answer.status_code == 401
    # five tries spent: the right code no longer works
    right = api.post(
        "/api/v1/residents/verify", json={"email": email, "code": code, "consent": True}
    )
    assert right.status_code == 401
    # a new code, expired in the database: refused
    api.post("/api/v1/residents/sign-in", json={"email": email})
    code = mailbox.code_for(email)
    with connect(residents_db, autocommit=True) as conn:
        conn.execute("UPDATE resident_codes SET expires_at = now() - interval '1 second'"
                     " WHERE email = %s", (email,))  # fmt: skip
    late = api.post(
        "/api/v1/residents/verify", json={"email": email, "code": code, "consent": True}
    )
    assert late.status_code == 401


def test_codes_are_rate_limited_per_address_and_per_network(
    residents_db: str, smtp: tuple[Mailbox, str]
) -> None:
    settings = residents_settings(
        residents_db, smtp[1], codes_per_address_per_hour=2, codes_per_network_per_hour=4
    )
    with TestClient(create_app(settings), client=("198.51.100.7", 5000)) as client:
        one = {"email": "limited@example.org"}
        assert client.post("/api/v1/residents/sign-in", json=one).status_code == 202
        assert client.post("/api/v1/residents/sign-in", json=one).status_code == 202
        limited = client.post("/api/v1/residents/sign-in", json=one)
        assert limited.status_code == 429 and "Retry-After" in limited.headers
        assert (
            client.post("/api/v1/residents/sign-in", json={"email": "b1@example.org"}).status_code
            == 202
        )
        assert (
            client.post("/api/v1/residents/sign-in", json={"email": "b2@example.org"}).status_code
            == 202
        )
        network = client.post("/api/v1/residents/sign-in", json={"email": "b3@example.org"})
        assert network.status_code == 429 and "network" in network.json()["detail"]
    # another network is not held back
    with TestClient(create_app(settings), client=("203.0.113.9", 5000)) as other:
        assert (
            other.post("/api/v1/residents/sign-in", json={"email": "b3@example.org"}).status_code
            == 202
        )


# --- subscriptions, feed, Atom, digests -------------------------------------------------------


def _add_document(url: str, sample_dir: Path, tmp: Path, doc_id: str, title: str) -> None:
    catalogue = json.loads((sample_dir / "disclosures.json").read_text(encoding="utf-8"))
    catalogue["documents"].append({
        "id": doc_id, "title": title, "body": None, "url": None, "category": "service",
        "published_at": "2026-11-30", "issuer": "罗湖区教育局", "doc_number": None,
        "matter_ids": [MATTER],
    })  # fmt: skip
    path = tmp / f"{doc_id}.json"
    path.write_text(json.dumps(catalogue, ensure_ascii=False), encoding="utf-8")
    with connect(url) as conn:
        ingest_catalogue(conn, path)


def _add_toilet(url: str, tmp: Path, source_id: str, name: str, lat: float, lon: float) -> str:
    features = {"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": {"source_id": source_id, "name": name, "opening_hours": "24/7"},
    }]}  # fmt: skip
    path = tmp / f"{source_id}.geojson"
    path.write_text(json.dumps(features, ensure_ascii=False), encoding="utf-8")
    with connect(url) as conn:
        ingest_file(conn, path, layer="toilet", source="residents-test")
    return facility_id("residents-test", source_id)


def test_new_document_and_facility_reach_followers_feeds_atom_and_one_digest(
    api: TestClient, smtp: tuple[Mailbox, str], residents_db: str, sample_dir: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    mailbox = smtp[0]
    alice, bob = "feed-alice@example.org", "feed-bob@example.org"
    a, b = sign_up(api, mailbox, alice, "en"), sign_up(api, mailbox, bob)
    follow = api.post("/api/v1/me/subscriptions", headers=bearer(a),
                      json={"kind": "matter", "id": MATTER})  # fmt: skip
    assert follow.status_code == 201
    same = api.post("/api/v1/me/subscriptions", headers=bearer(a),
                    json={"kind": "matter", "id": MATTER})  # fmt: skip
    assert same.json()["id"] == follow.json()["id"]
    area = api.post("/api/v1/me/subscriptions", headers=bearer(a), json={
        "kind": "area", "layer": "toilet", "lat": HOME[0], "lon": HOME[1], "radius_m": 500})  # fmt: skip
    assert area.status_code == 201, area.text
    assert api.post("/api/v1/me/subscriptions", headers=bearer(b),
                    json={"kind": "matter", "id": OTHER_MATTER}).status_code == 201  # fmt: skip
    assert api.post("/api/v1/me/subscriptions", headers=bearer(b),
                    json={"kind": "matter", "id": "no-such"}).status_code == 404  # fmt: skip
    listed = api.get("/api/v1/me/subscriptions", headers=bearer(a)).json()["subscriptions"]
    assert {s["kind"] for s in listed} == {"matter", "area"}
    # earlier digests (sign-up) aside: start from a quiet mailbox for these two
    notify(residents_db, residents_settings(residents_db, smtp[1]))
    before = len(mailbox.to(alice)) + len(mailbox.to(bob))

    _add_document(residents_db, sample_dir, tmp_path, "D-RES-1", "义务教育入学新规定（测试）")
    inside = _add_toilet(residents_db, tmp_path, "R-IN", "家门口公厕", HOME[0] + 0.002, HOME[1])
    outside = _add_toilet(residents_db, tmp_path, "R-OUT", "远处公厕", HOME[0] + 0.05, HOME[1])

    items = api.get("/api/v1/me/feed", headers=bearer(a)).json()["items"]
    titles = {i["title"]: i for i in items}
    assert "义务教育入学新规定（测试）" in titles and "家门口公厕" in titles
    assert "远处公厕" not in titles
    doc = titles["义务教育入学新规定（测试）"]
    assert doc["url"].endswith("/documents/D-RES-1") and doc["kind"] == "document_new"
    assert doc["reason"].startswith("you follow ") and "义务教育" in doc["reason"]
    toilet = titles["家门口公厕"]
    assert toilet["kind"] == "facility_new" and toilet["url"].endswith(f"/facilities/{inside}")
    assert "500 m" in toilet["reason"]
    assert [i["id"] for i in items] == sorted((i["id"] for i in items), reverse=True)
    assert {"id", "kind", "title", "url", "published_at", "reason"} <= set(items[0])
    other = api.get("/api/v1/me/feed", headers=bearer(b)).json()["items"]
    assert not {"义务教育入学新规定（测试）", "家门口公厕"} & {i["title"] for i in other}

    # Atom: private and public, valid, linking to the pages
    feed_url = api.get("/api/v1/me", headers=bearer(a)).json()["feed_atom"]
    private = api.get(feed_url.split("8000", 1)[1])
    assert private.status_code == 200 and private.headers["content-type"].startswith(
        "application/atom+xml"
    )
    parsed = feedparser.parse(private.content)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert {e.title for e in parsed.entries} >= {"义务教育入学新规定（测试）", "家门口公厕"}
    assert api.get("/api/v1/me/feed.atom?token=wrong-key-123").status_code == 401
    matter = feedparser.parse(api.get(f"/feeds/matters/{MATTER}.atom").content)
    assert not matter.bozo and any(e.link.endswith("/documents/D-RES-1") for e in matter.entries)
    assert matter.feed.title and matter.entries[0].id
    facility = feedparser.parse(api.get(f"/feeds/facilities/{inside}.atom").content)
    assert not facility.bozo and facility.feed.title == "家门口公厕"
    assert api.get("/feeds/facilities/no-such.atom").status_code == 404

    # the digest: one mail to alice in English, with both items and an unsubscribe link
    settings = residents_settings(residents_db, smtp[1])
    result = notify(residents_db, settings)
    mails = mailbox.to(alice)[-1:]
    assert len(mailbox.to(alice)) + len(mailbox.to(bob)) == before + 1
    body = mails[0].get_body(("plain",)).get_content()
    assert "义务教育入学新规定（测试）" in body and "家门口公厕" in body and "远处公厕" not in body
    assert "updates on what you follow" in mails[0]["Subject"]
    assert "/me/unsubscribe?key=" in body and mails[0]["List-Unsubscribe"]
    assert result.mails >= 1
    # a repeated run sends nothing new
    again = notify(residents_db, settings)
    assert again.mails == 0 and len(mailbox.to(alice)) + len(mailbox.to(bob)) == before + 1
    # a closed facility reaches the area follower; the facility feed shows it
    with connect(residents_db) as conn:
        conn.execute("UPDATE facilities SET status = 'temporarily_closed' WHERE id = %s", (inside,))
    kinds = [i["kind"] for i in api.get("/api/v1/me/feed", headers=bearer(a)).json()["items"]]
    assert kinds[0] == "facility_closed"
    facility = feedparser.parse(api.get(f"/feeds/facilities/{inside}.atom").content)
    assert any("closed" in e.title for e in facility.entries)
    del outside


def test_unsubscribe_link_stops_digests(
    api: TestClient, smtp: tuple[Mailbox, str], residents_db: str
) -> None:
    token = sign_up(api, smtp[0], "unsub@example.org")
    with connect(residents_db) as conn:
        key = conn.execute("SELECT mail_key FROM residents WHERE email = 'unsub@example.org'"
                           ).fetchone()["mail_key"]  # fmt: skip
    assert api.post("/api/v1/residents/unsubscribe", json={"key": key}).status_code == 200
    assert api.get("/api/v1/me", headers=bearer(token)).json()["mail_digest"] is False
    assert api.post("/api/v1/residents/unsubscribe", json={"key": "x" * 20}).status_code == 404


def _servicemap_notify(url: str, smtp_url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DATABASE_URL": url, "SERVICEMAP_SMTP_URL": smtp_url, "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "geoservice.cli", "notify"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_interrupted_notify_never_sends_an_accepted_item_twice(
    api: TestClient, residents_db: str, tmp_path: Path, sample_dir: Path
) -> None:
    with smtp_server() as (mailbox, smtp_url):
        addresses = [f"kill-{n}@example.org" for n in range(4)]
        tokens = [sign_up(api_with(api, smtp_url), mailbox, a) for a in addresses]
        for token in tokens:
            api.post("/api/v1/me/subscriptions", headers=bearer(token),
                     json={"kind": "domain", "id": "compulsory_education"})  # fmt: skip
        # everything before this test is mailed first (also other modules' residents)
        notify(residents_db, residents_settings(residents_db, smtp_url))
        mailbox.accepted.clear()
        _add_document(residents_db, sample_dir, tmp_path, "D-KILL-1", "中断测试文件")

        # the second mail is held: the run is killed then, between mails
        held = threading.Event()
        release = threading.Event()
        seen = 0

        async def hold_second(message: Any) -> str | None:
            nonlocal seen
            seen += 1
            if seen == 2:
                held.set()
                while not release.is_set():
                    time.sleep(0.05)
                return "451 not accepted: the client went away"
            return None

        mailbox.before_reply = hold_second
        process = _servicemap_notify(residents_db, smtp_url)
        assert held.wait(120), process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        release.set()
        first_run = [m["To"] for m in mailbox.accepted]
        assert len(first_run) == 1
        mailbox.before_reply = None

        done = _servicemap_notify(residents_db, smtp_url)
        out, err = done.communicate(timeout=180)
        assert done.returncode == 0, err
        again = _servicemap_notify(residents_db, smtp_url)
        assert again.wait(180) == 0
        recipients = [m["To"] for m in mailbox.accepted if m["To"] in addresses]
        # every follower got the new document exactly once, the interrupted one included
        assert sorted(recipients) == sorted(addresses)
        for message in mailbox.accepted:
            if message["To"] in addresses:
                assert "中断测试文件" in message.get_body(("plain",)).get_content()


def api_with(api: TestClient, smtp_url: str) -> TestClient:
    """The module's client, its app mailing through `smtp_url` for a while."""
    settings = api.app.state.settings  # type: ignore[attr-defined]
    settings.residents = settings.residents.model_copy(update={"smtp_url": smtp_url})
    return api


# --- cases, ratings, export, erasure -----------------------------------------------------------


def test_export_and_erasure_keep_ratings_anonymous(
    api: TestClient, smtp: tuple[Mailbox, str], residents_db: str
) -> None:
    api_with(api, smtp[1])
    token = sign_up(api, smtp[0], "erase@example.org")
    api.post("/api/v1/me/subscriptions", headers=bearer(token),
             json={"kind": "domain", "id": "health"})  # fmt: skip
    with connect(residents_db) as conn:
        toilet = conn.execute("SELECT id FROM facilities WHERE layer = 'toilet' LIMIT 1"
                              ).fetchone()["id"]  # fmt: skip
    rated = api.post(f"/api/v1/facilities/{toilet}/ratings", json={"score": 4})
    assert rated.status_code == 201, rated.text
    ratings = api.get("/api/v1/me/ratings", headers=bearer(token)).json()["ratings"]
    assert [r["facility_id"] for r in ratings] == [toilet]
    exported = api.get("/api/v1/me/export", headers=bearer(token)).json()
    assert exported["account"]["email"] == "erase@example.org"
    assert [s["target"] for s in exported["subscriptions"]] == ["health"]
    assert len(exported["ratings"]) == 1 and exported["sessions"]
    assert set(exported) >= {"feed", "cases", "views", "sign_in_codes", "consent"}

    assert api.delete("/api/v1/me", headers=bearer(token)).status_code == 204
    assert api.get("/api/v1/me", headers=bearer(token)).status_code == 401
    with connect(residents_db) as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM residents WHERE email = 'erase@example.org') AS r,"
            " (SELECT count(*) FROM resident_codes WHERE email = 'erase@example.org') AS c,"
            " (SELECT count(*) FROM resident_subscriptions s WHERE NOT EXISTS"
            "   (SELECT 1 FROM residents x WHERE x.id = s.resident_id)) AS s,"
            " (SELECT count(*) FROM facility_ratings WHERE id = %s) AS kept",
            (ratings[0]["id"],),
        ).fetchone()
    assert left == {"r": 0, "c": 0, "s": 0, "kept": 1}


def test_recommendations_only_when_turned_on(
    api: TestClient, smtp: tuple[Mailbox, str], residents_db: str
) -> None:
    api_with(api, smtp[1])
    token = sign_up(api, smtp[0], "recommend@example.org")
    with connect(residents_db) as conn:
        school = conn.execute("SELECT id FROM facilities WHERE layer = 'school' LIMIT 1"
                              ).fetchone()["id"]  # fmt: skip
    view = {"kind": "facility", "id": school}
    assert api.post("/api/v1/me/views", headers=bearer(token), json=view).status_code == 204
    assert api.get("/api/v1/me/export", headers=bearer(token)).json()["views"] == []
    assert api.get("/api/v1/me/recommendations", headers=bearer(token)).json()["enabled"] is False
    api.patch("/api/v1/me", headers=bearer(token), json={"recommendations": True})
    api.post("/api/v1/me/views", headers=bearer(token), json=view)
    recommended = api.get("/api/v1/me/recommendations", headers=bearer(token)).json()
    assert recommended["enabled"] and recommended["matters"]
    api.patch("/api/v1/me", headers=bearer(token), json={"recommendations": False})
    assert api.get("/api/v1/me/export", headers=bearer(token)).json()["views"] == []


def test_case_progress_reaches_the_residents_feed(
    make_db: Callable[[], str], sample_dir: Path, tmp_path: Path
) -> None:
    from tests.geoservice.halls_support import MATTER as HALL_MATTER
    from tests.geoservice.halls_support import OPEN_HALL, load_halls_db, next_slot

    url = make_db()
    load_sample(url, sample_dir)
    load_halls_db(url, sample_dir, tmp_path)
    with (
        smtp_server() as (mailbox, smtp_url),
        TestClient(create_app(residents_settings(url, smtp_url))) as client,
    ):
        token = sign_up(client, mailbox, "case@example.org")
        start: datetime = next_slot(60)
        booked = client.post("/api/v1/appointments", json={
            "hall": OPEN_HALL, "matter": HALL_MATTER, "start": start.isoformat(),
            "name": "李四", "phone": "13912345678"})  # fmt: skip
        assert booked.status_code == 201, booked.text
        code = booked.json()["code"]
        assert client.post("/api/v1/me/cases", headers=bearer(token),
                           json={"code": code}).status_code == 201  # fmt: skip
        assert client.post("/api/v1/me/cases", headers=bearer(token),
                           json={"code": "nonexistent"}).status_code == 404  # fmt: skip
        cases = client.get("/api/v1/me/cases", headers=bearer(token)).json()["cases"]
        assert [c["code"] for c in cases] == [code]
        assert client.delete(f"/api/v1/appointments/{code}").status_code in (200, 204)
        items = client.get("/api/v1/me/feed", headers=bearer(token)).json()["items"]
        assert items and items[0]["kind"] == "case" and "cancelled" in items[0]["title"]
        assert items[0]["url"].endswith(f"/appointments/{code}")


def test_unused_accounts_are_erased_after_the_retention_period(
    api: TestClient, smtp: tuple[Mailbox, str], residents_db: str
) -> None:
    api_with(api, smtp[1])
    token = sign_up(api, smtp[0], "dormant@example.org")
    with connect(residents_db) as conn:
        conn.execute("UPDATE residents SET last_seen_at = now() - interval '400 days'"
                     " WHERE email = 'dormant@example.org'")  # fmt: skip
    result = notify(residents_db, residents_settings(residents_db, smtp[1], retention_days=365))
    assert result.erased_accounts >= 1
    assert api.get("/api/v1/me", headers=bearer(token)).status_code == 401


def test_serve_mails_digests_periodically_when_configured(
    residents_db: str, sample_dir: Path, tmp_path: Path
) -> None:
    with smtp_server() as (mailbox, smtp_url):
        settings = residents_settings(residents_db, smtp_url, notify_every_s=1)
        with TestClient(create_app(settings)) as client:
            token = sign_up(client, mailbox, "periodic@example.org")
            client.post("/api/v1/me/subscriptions", headers=bearer(token),
                        json={"kind": "matter", "id": MATTER})  # fmt: skip
            _add_document(residents_db, sample_dir, tmp_path, "D-PERIODIC", "定时推送测试文件")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(mailbox.to("periodic@example.org")) < 2:
                time.sleep(0.2)
        digests = mailbox.to("periodic@example.org")[1:]
        assert digests and "定时推送测试文件" in digests[0].get_body(("plain",)).get_content()


# --- the feed's pages and pruning ------------------------------------------------------------


def _event(conn: Any, title: str, age_days: int) -> int:
    """An event fanned out `age_days` ago (as the fan-out leaves it)."""
    row = conn.execute(
        "INSERT INTO resident_events (kind, document_id, title, at, fanned_out_at)"
        " VALUES ('document_new', %(t)s, %(t)s, now() - make_interval(days => %(d)s),"
        " now() - make_interval(days => %(d)s)) RETURNING id",
        {"t": title, "d": age_days},
    ).fetchone()
    return int(row["id"])


def _item(conn: Any, resident: int, event: int, mailed: bool) -> int:
    """A feed item of `event` for `resident`, written when the event was fanned out."""
    row = conn.execute(
        "INSERT INTO resident_feed (resident_id, event_id, created_at, mailed_at)"
        " SELECT %(r)s, id, fanned_out_at, CASE WHEN %(m)s THEN fanned_out_at END"
        " FROM resident_events WHERE id = %(e)s RETURNING id",
        {"r": resident, "e": event, "m": mailed},
    ).fetchone()
    return int(row["id"])


def _resident_id(conn: Any, email: str) -> int:
    return int(conn.execute("SELECT id FROM residents WHERE email = %s", (email,)).fetchone()["id"])


def test_feed_pages_newest_first_by_keyset_with_the_session_checked(
    api: TestClient, smtp: tuple[Mailbox, str], residents_db: str
) -> None:
    api_with(api, smtp[1])
    token = sign_up(api, smtp[0], "pages@example.org", "en")
    empty = api.get("/api/v1/me/feed", headers=bearer(token))
    assert empty.status_code == 200 and empty.json() == {"items": []}
    with connect(residents_db, autocommit=True) as conn:
        me = _resident_id(conn, "pages@example.org")
        written = [_item(conn, me, _event(conn, f"page item {n}", 1), True) for n in range(5)]
        # the session was last used two hours ago: reading the feed touches it
        conn.execute("UPDATE resident_sessions SET last_used_at = now() - interval '2 hours'"
                     " WHERE resident_id = %s", (me,))  # fmt: skip
    seen: list[int] = []
    url: str | None = "/api/v1/me/feed?limit=2"
    pages = 0
    while url is not None:
        page = api.get(url, headers=bearer(token))
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [i["id"] for i in body["items"]]
        assert all(set(i) == {"id", "kind", "title", "url", "published_at", "reason"}
                   for i in body["items"])  # fmt: skip
        assert len(body["items"]) <= 2
        url = body.get("next")
        pages += 1
    assert seen == sorted(written, reverse=True) and pages == 3
    assert (
        api.get(f"/api/v1/me/feed?before={written[2]}", headers=bearer(token)).json()["items"]
        == api.get("/api/v1/me/feed", headers=bearer(token)).json()["items"][3:]
    )
    with connect(residents_db) as conn:
        touched = conn.execute("SELECT last_used_at > now() - interval '1 minute' AS fresh"
                               " FROM resident_sessions WHERE resident_id = %s", (me,)).fetchone()  # fmt: skip
    assert touched["fresh"]
    assert api.get("/api/v1/me/feed?limit=0", headers=bearer(token)).status_code == 422
    assert api.get("/api/v1/me/feed", headers=bearer("smr_" + "x" * 40)).status_code == 401
    assert api.post("/api/v1/residents/sign-out", headers=bearer(token)).status_code == 204
    api.cookies.clear()
    assert api.get("/api/v1/me/feed", headers=bearer(token)).status_code == 401
    assert api.get("/api/v1/me/feed").status_code == 401


def test_old_feed_items_and_events_are_pruned_but_unmailed_digests_wait(
    api: TestClient, smtp: tuple[Mailbox, str], residents_db: str
) -> None:
    mailbox = smtp[0]
    api_with(api, smtp[1])
    sign_up(api, mailbox, "prune-keen@example.org", "en")
    quiet = sign_up(api, mailbox, "prune-quiet@example.org")
    api.patch("/api/v1/me", headers=bearer(quiet), json={"mail_digest": False})
    # whatever earlier tests left unmailed is mailed first, so only this test's items wait
    notify(residents_db, residents_settings(residents_db, smtp[1]))
    with connect(residents_db, autocommit=True) as conn:
        keen, calm = (_resident_id(conn, f"prune-{n}@example.org") for n in ("keen", "quiet"))
        mailed = _event(conn, "old and mailed", 400)
        waiting = _event(conn, "old and waiting for the digest", 400)
        nobody = _event(conn, "old and for no one", 400)
        young = _event(conn, "young", 1)
        gone = [_item(conn, keen, mailed, True), _item(conn, calm, mailed, False),
                _item(conn, calm, waiting, False)]  # fmt: skip
        kept = [_item(conn, keen, waiting, False), _item(conn, keen, young, True),
                _item(conn, calm, young, False)]  # fmt: skip
        # one item per statement: the batches add up to the whole
        items, events = prune(conn, 30, batch=1)
        assert (items, events) == (3, 2)
        left = {r["id"] for r in conn.execute(
            "SELECT id FROM resident_feed WHERE id = ANY(%s)", (gone + kept,))}  # fmt: skip
        assert left == set(kept)
        events_left = {r["id"] for r in conn.execute(
            "SELECT id FROM resident_events WHERE id = ANY(%s)", ([mailed, waiting, nobody, young],))}  # fmt: skip
        assert events_left == {waiting, young}
    # without a mail server nothing is mailed, so the waiting item stays
    quiet_run = notify(residents_db, residents_settings(residents_db, None, feed_retention_days=30))
    assert (quiet_run.pruned_items, quiet_run.pruned_events) == (0, 0)
    # mailed in the next digest run, then pruned by the same run with its event
    before = len(mailbox.to("prune-keen@example.org"))
    run = notify(residents_db, residents_settings(residents_db, smtp[1], feed_retention_days=30))
    digest = mailbox.to("prune-keen@example.org")[before:]
    assert len(digest) == 1
    assert "old and waiting for the digest" in digest[0].get_body(("plain",)).get_content()
    assert (run.pruned_items, run.pruned_events) == (1, 1)
    with connect(residents_db) as conn:
        assert conn.execute("SELECT count(*) AS n FROM resident_events WHERE id = %s",
                            (waiting,)).fetchone()["n"] == 0  # fmt: skip
        assert {r["id"] for r in conn.execute(
            "SELECT id FROM resident_feed WHERE id = ANY(%s)", (kept,))} == set(kept[1:])  # fmt: skip
    # 0 keeps everything
    assert notify(residents_db, residents_settings(residents_db, None, feed_retention_days=0)
                  ).pruned_items == 0  # fmt: skip


def test_only_status_changes_record_facility_events(residents_db: str) -> None:
    with connect(residents_db, autocommit=True) as conn:
        a, b, c = (r["id"] for r in conn.execute(
            "SELECT id FROM facilities WHERE status = 'active' ORDER BY id LIMIT 3"))  # fmt: skip
        last = conn.execute("SELECT coalesce(max(id), 0) AS n FROM resident_events").fetchone()

        def recorded() -> list[tuple[str, str]]:
            return [(r["kind"], r["facility_id"]) for r in conn.execute(
                "SELECT kind, facility_id FROM resident_events WHERE id > %s ORDER BY id",
                (last["n"],))]  # fmt: skip

        # every row updated, no status changed: nothing recorded
        conn.execute("UPDATE facilities SET updated_at = now()")
        assert recorded() == []
        conn.execute(
            "UPDATE facilities SET status = CASE id WHEN %(a)s THEN 'temporarily_closed'"
            " WHEN %(b)s THEN 'removed' ELSE status END WHERE id IN (%(a)s, %(b)s, %(c)s)",
            {"a": a, "b": b, "c": c},
        )
        assert sorted(recorded()) == sorted([("facility_closed", a), ("facility_removed", b)])
        conn.execute("UPDATE facilities SET status = 'active' WHERE id IN (%s, %s)", (a, b))
        assert sorted(recorded()[2:]) == sorted(
            [("facility_reopened", a), ("facility_reopened", b)]
        )


#: a primary of this module's own with a streaming standby (test_replicas' fixture)
standby_pair = test_replicas.pair


def test_feed_on_a_standby_checks_the_session_on_the_primary(standby_pair: Pair) -> None:
    pair = standby_pair
    token = new_token("smr_")
    with connect(pair.primary_url, autocommit=True) as conn:
        me = conn.execute(
            "INSERT INTO residents (email, consent_version, feed_key, mail_key)"
            " VALUES ('standby@example.org', 'test', 'standby-feed', 'standby-mail') RETURNING id"
        ).fetchone()["id"]
        conn.execute("INSERT INTO resident_sessions (token_hash, resident_id) VALUES (%s, %s)",
                     (token_hash(token), me))  # fmt: skip
        first = _item(conn, me, _event(conn, "on both", 1), True)
    pair.caught_up()
    with TestClient(create_app(replica_settings(pair, SERVICEMAP_MAX_REPLICA_LAG_S=60))) as reads:
        wait_for(reads, "ok")
        assert [i["id"] for i in reads.get("/api/v1/me/feed", headers=bearer(token)).json()[
            "items"]] == [first]  # fmt: skip
        pair.pause()
        try:
            with connect(pair.primary_url, autocommit=True) as conn:
                _item(conn, me, _event(conn, "on the primary only", 1), True)
            # the page comes from the paused standby...
            page = reads.get("/api/v1/me/feed", headers=bearer(token))
            assert [i["id"] for i in page.json()["items"]] == [first]
            # ...the session from the primary: signed out is signed out at once
            with connect(pair.primary_url, autocommit=True) as conn:
                conn.execute("DELETE FROM resident_sessions WHERE resident_id = %s", (me,))
            assert reads.get("/api/v1/me/feed", headers=bearer(token)).status_code == 401
        finally:
            pair.resume()
            pair.caught_up()
