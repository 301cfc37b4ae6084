"""The digest run: fan pending events out, then mail each resident their new items, once.

One mail per resident per run, in the resident's language, with a link to their page and an
unsubscribe link. An item is mailed at most once, also when a run is interrupted and repeated:
each mail's items are recorded as mailed (``resident_feed.mailed_at``, autocommit) right after
the server accepted the message and before the next mail is begun, so an interruption can only
ever repeat the one message whose acceptance it did not live to record. Only one run works at a
time (a session advisory lock): ``servicemap notify`` and ``serve``'s periodic mode may overlap.
The run also does the upkeep: expired sign-in codes, stale sessions and accounts unused for
``retention_days`` go, and so do feed items older than ``feed_retention_days`` (``prune``).

Pruning rule: an item older than the retention goes unless it has not been mailed yet and its
resident wants digests (it goes in a later run, once mailed; without a mail server such items
stay); an event goes once it was fanned out before the cut-off and no item refers to it any
more (the public facility feeds' closures and reopenings are kept as long). A feed item is
written in its event's fan-out statement, so its ``created_at`` is its event's
``fanned_out_at``: old events are taken a chunk at a time (by id), their deletable items deleted
``PRUNE_BATCH`` at a time, each in its own short transaction, then the chunk's events that no
item refers to. Only the run holding the lock marks items mailed, so nothing changes under it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from geoservice.db.connection import connect
from geoservice.residents.account import ERASE_UNUSED, PURGE
from geoservice.residents.delivery import (
    Delivery,
    Digest,
    DigestItem,
    LogDelivery,
    delivery_for,
)
from geoservice.residents.feed import FEED_COLUMNS, FEED_JOINS, fan_out, item_json
from geoservice.settings import Settings

logger = logging.getLogger("servicemap.residents")

#: pg_try_advisory_lock key of the digest run ('smnotify' as a number)
LOCK_KEY = 0x736D6E6F74696679 & 0x7FFFFFFFFFFFFFFF
#: items listed in one mail; more are counted and left to the page
MAX_LISTED = 30
#: unmailed items looked at per resident and run (the rest wait for the next run)
MAX_ITEMS = 1000

_RECIPIENTS = """
SELECT r.id, r.email, r.lang, r.mail_key
FROM residents r
WHERE r.mail_digest AND r.id > %(after)s
  AND EXISTS (SELECT 1 FROM resident_feed f WHERE f.resident_id = r.id AND f.mailed_at IS NULL)
ORDER BY r.id LIMIT 500
"""
_UNMAILED = f"""
SELECT {FEED_COLUMNS} {FEED_JOINS}
WHERE f.resident_id = %(r)s AND f.mailed_at IS NULL
ORDER BY f.id DESC LIMIT {MAX_ITEMS}
"""
_MARK = "UPDATE resident_feed SET mailed_at = now() WHERE id = ANY(%(ids)s) AND mailed_at IS NULL"

#: old events looked at per chunk, and feed items deleted per statement, when pruning
PRUNE_CHUNK = 200
PRUNE_BATCH = 10_000
_OLD_EVENTS = """
SELECT id FROM resident_events
WHERE fanned_out_at < now() - make_interval(days => %(days)s) AND id > %(after)s
ORDER BY id LIMIT %(chunk)s
"""
_PRUNE_ITEMS = """
DELETE FROM resident_feed WHERE id IN (
    SELECT f.id FROM resident_feed f JOIN residents r ON r.id = f.resident_id
    WHERE f.event_id = ANY(%(events)s)
      AND f.created_at < now() - make_interval(days => %(days)s)
      AND (f.mailed_at IS NOT NULL OR NOT r.mail_digest)
    LIMIT %(batch)s
)
"""
_PRUNE_EVENTS = """
DELETE FROM resident_events e
WHERE e.id = ANY(%(events)s)
  AND NOT EXISTS (SELECT 1 FROM resident_feed f WHERE f.event_id = e.id)
"""


class NotifyBusy(Exception):
    """Another digest run holds the lock."""


@dataclass
class NotifyResult:
    """What a run did."""

    events: int = 0
    items: int = 0
    mails: int = 0
    mailed_items: int = 0
    failed: int = 0
    erased_accounts: int = 0
    purged_codes: int = 0
    pruned_items: int = 0
    pruned_events: int = 0


def digest_for(resident: dict[str, Any], rows: list[dict[str, Any]], public_url: str) -> Digest:
    """The digest of these unmailed rows (newest first) for this resident."""
    lang = str(resident["lang"])
    items = [item_json(r, lang, public_url) for r in rows[:MAX_LISTED]]
    return Digest(
        address=str(resident["email"]),
        lang=lang,
        items=[DigestItem(i["title"], i["kind"], i["url"], i["reason"]) for i in items],
        more=max(0, len(rows) - MAX_LISTED),
        page_url=f"{public_url}/me",
        unsubscribe_url=f"{public_url}/me/unsubscribe?key={resident['mail_key']}",
    )


def run(url: str, settings: Settings, delivery: Delivery | None = None) -> NotifyResult:
    """One digest run against the database at `url`."""
    s = settings.residents
    if delivery is None:
        delivery = delivery_for(s.smtp_url, s.mail_from)
    result = NotifyResult()
    public_url = settings.service.public_url
    with connect(url, autocommit=True) as conn:
        locked = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (LOCK_KEY,)).fetchone()
        if not locked or not locked["ok"]:
            raise NotifyBusy("another notify run is in progress")
        try:
            result.events, result.items = fan_out(conn, s.max_radius_m)
            # without a mail server (LogDelivery) nothing is sent, so nothing is marked mailed
            if not isinstance(delivery, LogDelivery):
                _mail(conn, delivery, public_url, result)
            purged = conn.execute(PURGE, {"days": s.session_days}).fetchone()
            result.purged_codes = int(purged["codes"]) if purged else 0
            if s.retention_days:
                erased = conn.execute(ERASE_UNUSED, {"days": s.retention_days}).fetchone()
                result.erased_accounts = int(erased["erased"]) if erased else 0
            if s.feed_retention_days:
                result.pruned_items, result.pruned_events = prune(conn, s.feed_retention_days)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return result


def prune(conn: Any, days: int, batch: int = PRUNE_BATCH) -> tuple[int, int]:
    """Delete feed items and events older than `days` (autocommit connection, under the lock):
    (items, events) deleted; see the module's pruning rule."""
    items = events = 0
    after = 0
    while True:
        found = conn.execute(_OLD_EVENTS, {"days": days, "after": after, "chunk": PRUNE_CHUNK})
        chunk = [int(r["id"]) for r in found.fetchall()]
        if not chunk:
            return items, events
        params: dict[str, Any] = {"events": chunk, "days": days, "batch": batch}
        while True:
            deleted = conn.execute(_PRUNE_ITEMS, params).rowcount
            items += deleted
            if deleted < batch:
                break
        events += conn.execute(_PRUNE_EVENTS, {"events": chunk}).rowcount
        after = chunk[-1]


def _mail(conn: Any, delivery: Delivery, public_url: str, result: NotifyResult) -> None:
    after = 0
    while True:
        recipients = conn.execute(_RECIPIENTS, {"after": after}).fetchall()
        if not recipients:
            return
        for resident in recipients:
            after = int(resident["id"])
            rows = conn.execute(_UNMAILED, {"r": resident["id"]}).fetchall()
            if not rows:
                continue
            try:
                delivery.send_digest(digest_for(resident, rows, public_url))
            except Exception as exc:  # noqa: BLE001 - one address failing stops no one else
                logger.error("digest for resident %s not sent: %s", resident["id"], exc)
                result.failed += 1
                continue
            # accepted: recorded before anything else happens
            conn.execute(_MARK, {"ids": [r["id"] for r in rows]})
            result.mails += 1
            result.mailed_items += len(rows)


async def periodic(url: str, settings: Settings, every_s: float) -> None:
    """``servicemap serve``'s periodic mode: a digest run every `every_s` seconds."""
    while True:
        await asyncio.sleep(every_s)
        try:
            outcome = await asyncio.to_thread(run, url, settings)
            if outcome.mails or outcome.failed:
                logger.info("notify: %s", outcome)
        except NotifyBusy:
            continue
        except Exception:  # noqa: BLE001 - the next period tries again
            logger.exception("notify run failed")
