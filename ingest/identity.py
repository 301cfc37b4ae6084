"""Identity across loads of sources without ids: a re-surveyed place is the same facility.

A file without an id column gets ids made from layer + name + position rounded to ~10 m
(`transform.generated_source_ids`). Re-surveyed a metre away, a place near a rounding edge
would get a new id and be inserted a second time (50 toilets moved 1 m east gave 55 active
rows). So before the upsert, each staged row whose generated id is new is matched to the
existing live facility of the same source and layer within `MATCH_METRES` whose name is similar
(`normalised_name`); a single match on both sides takes the stored id, and the row updates
that facility. Several candidates are never guessed between: the row is reported for review
(and loads as a new facility).
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from typing import Any

import psycopg
from psycopg import sql
from rapidfuzz import fuzz

from ingest.load import facility_id
from ingest.report import Issue
from layers import facility

#: how far a re-surveyed place may have moved and still be the same facility
MATCH_METRES = 10.0
#: rapidfuzz ratio (0-100) of normalised names above which two names are the same place's
SIMILAR_NAME_SCORE = 80.0
#: prefixes naming the city or district, which some surveys write and others leave out
_PLACE_PREFIXES = ("广东省", "廣東省", "深圳市", "深圳", "罗湖区", "羅湖區", "罗湖", "羅湖")
_BRACKETED = re.compile(r"[(\[{【〔][^)\]}】〕]*[)\]}】〕]")
_PUNCTUATION = re.compile(r"[\s()\[\]{}【】〔〕\-_·.,、，。:;：；'\"“”‘’]+")

# staged rows with a new generated id, and the live facilities near them not listed by the file
_CANDIDATES = sql.SQL("""
SELECT s.source_id AS staged, s.name AS staged_name, s.row_no,
       f.source_id AS stored, f.name AS stored_name
FROM facility_staging s
JOIN facilities f
  ON f.source = %(source)s AND f.layer = s.layer AND {live}
 AND ST_DWithin(f.geom, ST_SetSRID(ST_MakePoint(s.lon, s.lat), 4326), %(degrees)s)
 AND ST_DWithin(f.geom::geography, ST_SetSRID(ST_MakePoint(s.lon, s.lat), 4326)::geography,
                %(metres)s)
WHERE s.source_id LIKE 'auto-%%'
  AND NOT EXISTS (SELECT 1 FROM facilities e
                  WHERE e.source = %(source)s AND e.source_id = s.source_id)
  AND NOT EXISTS (SELECT 1 FROM facility_staging t WHERE t.source_id = f.source_id)
""").format(live=sql.SQL(facility.live("f")))

_TAKE_IDS = """
UPDATE facility_staging s SET source_id = m.stored, id = m.id
FROM unnest(%(staged)s::text[], %(stored)s::text[], %(ids)s::text[]) AS m(staged, stored, id)
WHERE s.source_id = m.staged
"""


def normalised_name(name: str | None) -> str:
    """A name folded for matching: full/half width, case, city/district prefixes, brackets."""
    text = unicodedata.normalize("NFKC", name or "").casefold().strip()
    changed = True
    while changed:
        changed = False
        for prefix in _PLACE_PREFIXES:
            if text.startswith(prefix) and len(text) > len(prefix):
                text, changed = text[len(prefix) :].lstrip(), True
    return _PUNCTUATION.sub("", text)


def similar_names(a: str | None, b: str | None) -> bool:
    """Whether two names are one place's, written by two surveys."""
    first, second = normalised_name(a), normalised_name(b)
    if not first or not second:
        return False
    if first == second:
        return True
    # a remark in brackets ("东门公厕（东门店）") is not part of the name
    plain_a = normalised_name(_BRACKETED.sub("", unicodedata.normalize("NFKC", a or "")))
    plain_b = normalised_name(_BRACKETED.sub("", unicodedata.normalize("NFKC", b or "")))
    if plain_a and plain_a == plain_b:
        return True
    return fuzz.ratio(first, second) >= SIMILAR_NAME_SCORE


def match_moved(cur: psycopg.Cursor[Any], source: str) -> tuple[int, list[Issue]]:
    """Give staged rows the id of the facility they re-survey; (rows matched, review issues)."""
    # a degree of latitude is ~111 km; of longitude less: the box is a prefilter, metres decide
    params = {"source": source, "metres": MATCH_METRES, "degrees": MATCH_METRES / 50_000}
    cur.execute(_CANDIDATES, params)
    by_staged: dict[str, list[dict[str, Any]]] = defaultdict(list)
    claims: dict[str, set[str]] = defaultdict(set)
    for pair in cur.fetchall():
        row = dict(pair) if not isinstance(pair, dict) else pair
        if similar_names(row["staged_name"], row["stored_name"]):
            by_staged[row["staged"]].append(row)
            claims[row["stored"]].add(row["staged"])
    matches: list[dict[str, str]] = []
    issues: list[Issue] = []
    for staged, found in by_staged.items():
        stored = {r["stored"] for r in found}
        contested = any(len(claims[s]) > 1 for s in stored)
        if len(stored) == 1 and not contested:
            only = found[0]["stored"]
            matches.append({"staged": staged, "stored": only, "id": facility_id(source, only)})
            continue
        first = found[0]
        names = ", ".join(sorted({repr(r["stored_name"]) for r in found}))
        reason = (
            f"ambiguous match: {len(stored)} facilities of this source within {MATCH_METRES:g} m "
            f"have a similar name ({names})"
            if not contested
            else "ambiguous match: another row of the file is as close to the same facility"
        )
        issues.append(
            Issue(
                None if first["row_no"] is None else int(first["row_no"]),
                None,
                "name",
                first["staged_name"],
                f"{reason}; loaded as a new facility, review it",
                "warning",
            )  # fmt: skip
        )
    if matches:
        cur.execute(
            _TAKE_IDS,
            {key: [m[name] for m in matches] for key, name in
             (("staged", "staged"), ("stored", "stored"), ("ids", "id"))},
        )  # fmt: skip
    return len(matches), issues
