"""Facility ↔ matter ↔ document links: rules, name matching, manual links (``servicemap link``).

Three ways a facility is linked, strongest first:

- ``manual``: the catalogue's links section names the facility (by source and source_id) and a
  matter; ``exclude: true`` removes a pair the other two would make. Resolved at query time
  by the ``facility_matter_links`` view, so they apply to facilities loaded later too.
- ``name_match``: a document's title or body names the facility, full or short name, in
  Simplified or Traditional script. One Aho-Corasick automaton over the facility names scans
  each document once (leftmost-longest, so "翠竹公园公厕" never also counts as "翠竹公厕").
  The document's matters become the facility's too. Facilities are streamed; past
  ``NAMES_CHUNK`` of them, only names some document contains go into that automaton (found a
  chunk at a time), and with no document no name is read at all: memory stays bounded.
- ``rule``: each layer declares the domains it serves and the words that mark a matter it
  handles (``Layer.disclosure_domains``, ``Layer.matter_keywords``); rules are layer-wide and
  stored once per (layer, matter).

Re-linking computes the new sets, then applies only the difference (one transaction), so a second
run changes nothing and the report says what was added and removed.
"""

from __future__ import annotations

import time
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ahocorasick
import numpy as np
import opencc
import psycopg
from psycopg.rows import tuple_row

import layers
from layers.facility import live

#: link scores: how sure each method is (manual links are 1.0)
SCORE_MANUAL = 1.0
SCORE_FULL_NAME_TITLE = 0.9
SCORE_SHORT_NAME_TITLE = 0.8
SCORE_FULL_NAME_BODY = 0.7
SCORE_SHORT_NAME_BODY = 0.6
SCORE_RULE_KEYWORD = 0.5
SCORE_RULE_DOMAIN = 0.3

#: shortest name worth matching: shorter ones ("公厕", "小学") name a kind, not a place
MIN_NAME_CHARS = 4
MIN_LATIN_NAME_CHARS = 8
#: a name shared by more facilities than this says nothing about which one a document means
MAX_FACILITIES_PER_NAME = 3
#: prefixes a short name drops: the city and the district are implied inside the district
ADMIN_PREFIXES = ("深圳市", "深圳", "罗湖区", "罗湖")

_LOCK_KEY = 0x5E1C_0D15  # advisory lock: one `servicemap link` at a time per database


class ScriptNormaliser:
    """Text to one comparable form: NFKC, case-folded, Traditional converted to Simplified.

    OpenCC's phrase-aware conversion is exact but slow in pure Python; most district text is
    already Simplified, so only texts holding a character that OpenCC changes are converted.
    Which characters change is learnt per distinct character, once.
    """

    def __init__(self) -> None:
        self._t2s = opencc.OpenCC("t2s")
        self._changing: set[str] = set()
        self._checked: set[str] = set()

    def __call__(self, text: str) -> str:
        """The normalised text."""
        text = unicodedata.normalize("NFKC", text).casefold()
        chars = set(text)
        new = chars - self._checked
        if new:
            for char in new:
                # ASCII never changes; skip the converter for it
                if ord(char) > 0x2E7F and self._t2s.convert(char) != char:
                    self._changing.add(char)
            self._checked |= new
        if chars & self._changing:
            converted: str = self._t2s.convert(text)
            return converted
        return text


@dataclass
class Diff:
    """What applying a new set of links changed."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    total: int = 0


@dataclass
class LinkReport:
    """The outcome of one ``servicemap link``."""

    rules: Diff = field(default_factory=Diff)
    name_matches: Diff = field(default_factory=Diff)
    manual: int = 0
    manual_excluded: int = 0
    manual_unresolved: int = 0
    facilities: int = 0
    documents: int = 0
    matters: int = 0
    patterns: int = 0
    duration_s: float = 0.0

    @property
    def changed(self) -> bool:
        """Whether anything stored changed."""
        return any(d.added or d.updated or d.removed for d in (self.rules, self.name_matches))


# ----------------------------------------------------------------------------------- rules


def rule_links(
    matters: Iterable[tuple[str, str, str]], normalise: ScriptNormaliser
) -> list[tuple[str, str, float, str]]:
    """(layer, matter_id, score, reason) for every matter a layer serves by its declared rules.

    A layer serves a matter of one of its domains when the matter's title contains one of the
    layer's keywords (either script); a layer that declares no keywords serves all of them.
    """
    plans = []
    for layer in layers.all_layers().values():
        keywords = tuple(dict.fromkeys(normalise(k) for k in layer.matter_keywords if k))
        plans.append((layer.key, frozenset(layer.disclosure_domains), keywords))
    out: list[tuple[str, str, float, str]] = []
    for matter_id, title, domain in matters:
        text = normalise(title)
        for key, domains, keywords in plans:
            if domain not in domains:
                continue
            if not keywords:
                out.append((key, matter_id, SCORE_RULE_DOMAIN, f"domain {domain}"))
                continue
            hit = next((k for k in keywords if k in text), None)
            if hit is not None:
                out.append((key, matter_id, SCORE_RULE_KEYWORD, f"domain {domain}, keyword {hit}"))
    return out


# --------------------------------------------------------------------------- name matching


def short_names(name: str) -> list[str]:
    """Shorter names a document may use (already normalised): without city/district prefix."""
    shorts: list[str] = []
    current = name
    stripped = True
    while stripped:
        stripped = False
        for prefix in ADMIN_PREFIXES:
            if current.startswith(prefix) and len(current) > len(prefix):
                current = current[len(prefix) :]
                shorts.append(current)
                stripped = True
                break
    return shorts


def _long_enough(pattern: str) -> bool:
    if pattern.isascii():
        return len(pattern) >= MIN_LATIN_NAME_CHARS
    return len(pattern) >= MIN_NAME_CHARS


#: pattern -> {facility_id: is_full_name}, facilities in the order they came
Owners = dict[str, dict[str, bool]]


def name_owners(
    facilities: Iterable[tuple[str, str, str | None]], normalise: ScriptNormaliser
) -> Owners:
    """Every name worth matching (full, short, Latin) and the facilities it names."""
    owners: Owners = defaultdict(dict)
    for facility_id, name, name_en in facilities:
        full = normalise(name).strip()
        if _long_enough(full):
            owners[full][facility_id] = True
        for short in short_names(full):
            if _long_enough(short):
                owners[short].setdefault(facility_id, False)
        if name_en:
            latin = normalise(name_en).strip()
            if _long_enough(latin):
                owners[latin].setdefault(facility_id, True)
    return owners


class NameMatcher:
    """Every facility name in one Aho-Corasick automaton; `match` scans a text once."""

    def __init__(
        self,
        facilities: Iterable[tuple[str, str, str | None]],
        normalise: ScriptNormaliser,
        *,
        owners: Owners | None = None,
    ) -> None:
        if owners is None:
            owners = name_owners(facilities, normalise)
        self.automaton = ahocorasick.Automaton()
        self.patterns = 0
        for pattern, by_facility in owners.items():
            if len(by_facility) > MAX_FACILITIES_PER_NAME:
                continue
            # a name several facilities share is weaker evidence for each of them
            share = 1.0 / len(by_facility)
            entries = tuple((fid, full, share) for fid, full in by_facility.items())
            self.automaton.add_word(pattern, (pattern, entries))
            self.patterns += 1
        if self.patterns:
            self.automaton.make_automaton()

    def match(self, text: str) -> Iterator[tuple[str, bool, float, str]]:
        """(facility_id, full name?, share, matched pattern) for each name found in `text`."""
        if not self.patterns or not text:
            return
        for _end, (pattern, entries) in self.automaton.iter_long(text):
            for facility_id, full, share in entries:
                yield facility_id, full, share, pattern


def names_in_texts(owners: Owners, texts: Iterable[str]) -> set[str]:
    """The patterns of `owners` that occur anywhere in `texts` (overlaps included)."""
    automaton = ahocorasick.Automaton()
    for pattern in owners:
        automaton.add_word(pattern, pattern)
    if not owners:
        return set()
    automaton.make_automaton()
    found: set[str] = set()
    for text in texts:
        found.update(pattern for _end, pattern in automaton.iter(text))
    return found


#: a document's normalised texts: (text, score of a full name in it, of a short name)
NormalisedDocument = tuple[str, list[tuple[str, float, float]]]


def normalised_documents(
    documents: Iterable[tuple[str, str | None, str | None, str | None]],
    normalise: ScriptNormaliser,
) -> list[NormalisedDocument]:
    """(id, [(text, full score, short score)]) over (id, title, title_en, body), texts normalised."""
    out: list[NormalisedDocument] = []
    for document_id, title, title_en, body in documents:
        texts = [
            (normalise(text), full_score, short_score)
            for text, full_score, short_score in (
                (title, SCORE_FULL_NAME_TITLE, SCORE_SHORT_NAME_TITLE),
                (title_en, SCORE_FULL_NAME_TITLE, SCORE_SHORT_NAME_TITLE),
                (body, SCORE_FULL_NAME_BODY, SCORE_SHORT_NAME_BODY),
            )
            if text
        ]
        out.append((document_id, texts))
    return out


def document_links(
    documents: Iterable[NormalisedDocument], matcher: NameMatcher
) -> dict[tuple[str, str], tuple[float, str]]:
    """{(facility_id, document_id): (score, matched name)}: the best name of each pair."""
    found: dict[tuple[str, str], tuple[float, str]] = {}
    for document_id, texts in documents:
        for text, full_score, short_score in texts:
            for facility_id, full, share, pattern in matcher.match(text):
                score = round((full_score if full else short_score) * share, 4)
                key = (facility_id, document_id)
                if key not in found or found[key][0] < score:
                    found[key] = (score, pattern)
    return found


def name_links(
    documents: Iterable[tuple[str, str | None, str | None, str | None]],
    matcher: NameMatcher,
    normalise: ScriptNormaliser,
) -> dict[tuple[str, str], tuple[float, str]]:
    """{(facility_id, document_id): (score, matched name)} over (id, title, title_en, body)."""
    return document_links(normalised_documents(documents, normalise), matcher)


#: facilities whose names make one automaton; more are sifted a chunk at a time
NAMES_CHUNK = 50_000


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _count_patterns(
    counts: tuple[np.ndarray, np.ndarray], owners: Owners
) -> tuple[np.ndarray, np.ndarray]:
    """Fold a chunk's patterns into (sorted pattern hashes, facilities naming each, capped).

    Merged in place by binary search: memory about twice the running arrays (9 bytes a name).
    """
    cap = MAX_FACILITIES_PER_NAME + 1
    hashes = np.fromiter((hash(p) for p in owners), dtype=np.int64, count=len(owners))
    named = np.fromiter(
        (min(len(by), cap) for by in owners.values()), dtype=np.uint8, count=len(owners)
    )
    order = np.argsort(hashes)
    hashes, named = hashes[order], named[order]
    known, seen = counts
    at = np.searchsorted(known, hashes)
    found = at < len(known)
    found[found] = known[at[found]] == hashes[found]
    seen = seen.copy()
    seen[at[found]] = np.minimum(seen[at[found]].astype(np.int64) + named[found], cap)
    fresh = ~found
    return np.insert(known, at[fresh], hashes[fresh]), np.insert(seen, at[fresh], named[fresh])


def document_names(
    conn: psycopg.Connection[Any], documents: list[NormalisedDocument], normalise: ScriptNormaliser
) -> tuple[Owners, int, int | None]:
    """(owners of the names worth searching the documents for, live facilities, patterns).

    Facilities are streamed. Up to NAMES_CHUNK of them, every name is kept (one automaton, as
    before; patterns None: the matcher counts them). Beyond, each chunk's names are sifted
    for those some document contains, and only these are kept: the same matches (a name no
    text contains never changes a leftmost-longest scan) in memory bounded by the chunk, with
    the names searched for counted by hash.
    """
    with conn.cursor(name="link_facilities", row_factory=tuple_row) as rows:
        rows.itersize = 10_000
        rows.execute(f"SELECT id, name, name_en FROM facilities WHERE {live(None)}")
        chunks = _chunks(rows, NAMES_CHUNK)
        first = next(chunks, [])
        owners = name_owners(first, normalise)
        facilities = len(first)
        if facilities < NAMES_CHUNK:
            return owners, facilities, None
        del first
        texts = [text for _id, parts in documents for text, _full, _short in parts]
        kept: Owners = {}
        counts = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint8))
        while True:
            counts = _count_patterns(counts, owners)
            for pattern in names_in_texts(owners, texts):
                into = kept.setdefault(pattern, {})
                for facility_id, full in owners[pattern].items():
                    if len(into) > MAX_FACILITIES_PER_NAME:
                        break  # too common a name already: never searched for
                    into[facility_id] = full
            chunk = next(chunks, None)
            if chunk is None:
                break
            facilities += len(chunk)
            owners = name_owners(chunk, normalise)
    patterns = int(np.count_nonzero(counts[1] <= MAX_FACILITIES_PER_NAME))
    return kept, facilities, patterns


# ---------------------------------------------------------------------------------- storing

_STAGING = """
DROP TABLE IF EXISTS rule_staging, name_link_staging;
CREATE TEMP TABLE rule_staging (
    layer text NOT NULL, matter_id text NOT NULL, score float8 NOT NULL, reason text NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE name_link_staging (
    facility_id text NOT NULL, document_id text NOT NULL, score float8 NOT NULL,
    matched text NOT NULL
) ON COMMIT DROP;
"""

_APPLY_RULES = """
WITH removed AS (
    DELETE FROM layer_matter_rules r
    WHERE NOT EXISTS (SELECT 1 FROM rule_staging s
                      WHERE s.layer = r.layer AND s.matter_id = r.matter_id)
    RETURNING 1
), written AS (
    INSERT INTO layer_matter_rules AS r (layer, matter_id, score, reason)
    SELECT layer, matter_id, score, reason FROM rule_staging
    ON CONFLICT (layer, matter_id) DO UPDATE SET score = EXCLUDED.score, reason = EXCLUDED.reason
    WHERE (r.score, r.reason) IS DISTINCT FROM (EXCLUDED.score, EXCLUDED.reason)
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS added, count(*) FILTER (WHERE NOT inserted) AS updated,
       (SELECT count(*) FROM removed) AS removed, (SELECT count(*) FROM rule_staging) AS total
FROM written
"""

_APPLY_NAME_LINKS = """
WITH removed AS (
    DELETE FROM facility_document_links l
    WHERE l.method = 'name_match'
      AND NOT EXISTS (SELECT 1 FROM name_link_staging s
                      WHERE s.facility_id = l.facility_id AND s.document_id = l.document_id)
    RETURNING 1
), written AS (
    INSERT INTO facility_document_links AS l (facility_id, document_id, method, score, matched)
    SELECT facility_id, document_id, 'name_match', score, matched FROM name_link_staging
    ON CONFLICT (facility_id, document_id) DO UPDATE
        SET score = EXCLUDED.score, matched = EXCLUDED.matched
    WHERE l.method = 'name_match'
      AND (l.score, l.matched) IS DISTINCT FROM (EXCLUDED.score, EXCLUDED.matched)
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS added, count(*) FILTER (WHERE NOT inserted) AS updated,
       (SELECT count(*) FROM removed) AS removed,
       (SELECT count(*) FROM name_link_staging) AS total
FROM written
"""

_MANUAL = f"""
SELECT count(*) FILTER (WHERE f.id IS NOT NULL AND NOT ml.exclude) AS manual,
       count(*) FILTER (WHERE f.id IS NOT NULL AND ml.exclude) AS excluded,
       count(*) FILTER (WHERE f.id IS NULL) AS unresolved
FROM manual_links ml
LEFT JOIN facilities f
  ON f.source = ml.source AND f.source_id = ml.source_id AND {live("f")}
"""


def _diff(row: dict[str, Any] | None) -> Diff:
    assert row is not None
    return Diff(int(row["added"]), int(row["updated"]), int(row["removed"]), int(row["total"]))


def link_all(conn: psycopg.Connection[Any]) -> LinkReport:
    """Recompute every rule and name-match link and store the difference; one transaction."""
    started = time.monotonic()
    report = LinkReport()
    normalise = ScriptNormaliser()
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        cur.execute("SELECT id, title, domain FROM matters")
        matters = cur.fetchall()
        report.matters = len(matters)
        rules = rule_links(matters, normalise)

        cur.execute("SELECT id, title, title_en, body FROM documents")
        documents = normalised_documents(cur.fetchall(), normalise)
        report.documents = len(documents)
        found: dict[tuple[str, str], tuple[float, str]] = {}
        if documents:
            owners, report.facilities, patterns = document_names(conn, documents, normalise)
            matcher = NameMatcher((), normalise, owners=owners)
            del owners
            report.patterns = matcher.patterns if patterns is None else patterns
            found = document_links(documents, matcher)
        else:  # nothing to search: no name is, and the stale links all go
            cur.execute(f"SELECT count(*) FROM facilities WHERE {live(None)}")
            counted = cur.fetchone()
            report.facilities = int(counted[0]) if counted else 0
        del documents

        cur.execute(_STAGING)
        with cur.copy("COPY rule_staging (layer, matter_id, score, reason) FROM STDIN") as copy:
            for rule in rules:
                copy.write_row(rule)
        with cur.copy(
            "COPY name_link_staging (facility_id, document_id, score, matched) FROM STDIN"
        ) as copy:
            for (facility_id, document_id), (score, matched) in found.items():
                copy.write_row((facility_id, document_id, score, matched))
        cur.execute("ANALYZE rule_staging; ANALYZE name_link_staging")
        cur.execute(_APPLY_RULES)
        report.rules = _diff(_as_dict(cur))
        cur.execute(_APPLY_NAME_LINKS)
        report.name_matches = _diff(_as_dict(cur))
        cur.execute(_MANUAL)
        manual = _as_dict(cur)
        assert manual is not None
        report.manual = int(manual["manual"])
        report.manual_excluded = int(manual["excluded"])
        report.manual_unresolved = int(manual["unresolved"])
    report.duration_s = time.monotonic() - started
    return report


def _as_dict(cur: psycopg.Cursor[Any]) -> dict[str, Any] | None:
    row = cur.fetchone()
    if row is None:
        return None
    names = [d.name for d in cur.description or []]
    return dict(zip(names, row, strict=True))


def effective_link_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Facility ↔ matter links in force, by method (what the pages and the API show)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT method, count(*) FROM facility_matter_links GROUP BY method")
        counts = {str(method): int(n) for method, n in cur.fetchall()}
    return {method: counts.get(method, 0) for method in ("manual", "name_match", "rule")}
