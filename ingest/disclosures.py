"""The disclosure catalogue loader: matters, documents and manual links, atomic and idempotent.

Formats (chosen by the path):

- a JSON file ``{"matters": [...], "documents": [...], "links": [...]}`` as ``servicemap sample``
  writes it (``links`` optional);
- a directory holding ``matters.csv`` and/or ``documents.csv`` and optionally ``links.csv``
  (UTF-8, UTF-8 with BOM or GB18030; the delimiter is sniffed). In ``documents.csv`` the
  ``matter_ids`` column lists matter ids separated by ``;`` or ``|``.

Matter fields: ``id``, ``title``, ``title_en``, ``domain`` (one of the nine domain keys),
``department``. Document fields: ``id``, ``title``, ``title_en``, ``body``, ``url`` (http/https),
``category`` (one of the five stages), ``published_at`` (ISO date), ``issuer``, ``doc_number``,
``matter_ids``. Link fields: ``source``, ``source_id`` (the facility), ``matter_id``, ``exclude``
(true: this facility does not handle the matter, whatever the rules or name matching say).

Reading and validation are pure; `load_catalogue` writes everything in one transaction: COPY into
temporary staging tables, then one set-based upsert per table. A row that did not change is not
rewritten; a file with any invalid row writes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from ingest.report import MAX_STORED_ISSUES, Issue
from ingest.runs import record_run
from layers import CATEGORIES, DOMAINS, parse_tristate

#: Upper bounds on what one catalogue row may hold (a bad file must not exhaust memory/disk).
MAX_ID = 200
MAX_TITLE = 1000
MAX_URL = 2000
MAX_TEXT = 500
MAX_BODY = 200_000
MAX_MATTERS_PER_DOCUMENT = 100
MAX_FILE_BYTES = 1 << 30

MATTER_FIELDS = ("id", "title", "title_en", "domain", "department")
DOCUMENT_FIELDS = (
    "id",
    "title",
    "title_en",
    "body",
    "url",
    "category",
    "published_at",
    "issuer",
    "doc_number",
    "matter_ids",
)
LINK_FIELDS = ("source", "source_id", "matter_id", "exclude")
CSV_FILES = {"matters": "matters.csv", "documents": "documents.csv", "links": "links.csv"}


class CatalogueError(ValueError):
    """The catalogue cannot be read at all (missing, corrupt, wrong shape)."""


class CatalogueInvalid(ValueError):
    """Rows failed validation; nothing was written."""

    def __init__(self, problems: list[Issue]) -> None:
        self.problems = problems
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"invalid catalogue: {first}{more}")


@dataclass
class RawCatalogue:
    """Rows as read, each with the row number a person would look for in the file."""

    matters: list[tuple[int, Mapping[str, Any]]] = field(default_factory=list)
    documents: list[tuple[int, Mapping[str, Any]]] = field(default_factory=list)
    #: None when the file has no links section (existing manual links are then kept)
    links: list[tuple[int, Mapping[str, Any]]] | None = None


@dataclass
class Catalogue:
    """Validated rows, ready to stage."""

    matters: list[dict[str, Any]] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    document_matters: list[tuple[str, str]] = field(default_factory=list)
    links: list[dict[str, Any]] | None = None


@dataclass
class LoadReport:
    """What one catalogue load changed, per table."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    duration_s: float = 0.0

    def total(self, key: str) -> int:
        """Sum of one count over the tables."""
        return sum(c.get(key, 0) for c in self.counts.values())


# ----------------------------------------------------------------------------------- reading


def read_catalogue(path: Path) -> RawCatalogue:
    """Read a JSON catalogue file or a directory of CSVs; CatalogueError when unreadable."""
    if path.is_dir():
        return _read_csv_dir(path)
    if not path.is_file():
        raise CatalogueError(f"{path}: no such file or directory")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CatalogueError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    if path.suffix.lower() == ".csv":
        raise CatalogueError(
            f"{path}: a CSV catalogue is a directory holding matters.csv and documents.csv "
            "(and optionally links.csv); pass the directory"
        )
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise CatalogueError(f"{path}: not UTF-8 JSON ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise CatalogueError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    if not isinstance(data, dict):
        raise CatalogueError(f"{path}: the catalogue must be a JSON object with 'matters' and "
                             "'documents' lists")  # fmt: skip
    raw = RawCatalogue()
    for section in ("matters", "documents", "links"):
        rows = data.get(section)
        if rows is None:
            continue
        if not isinstance(rows, list):
            raise CatalogueError(f"{path}: '{section}' must be a list, got {type(rows).__name__}")
        numbered: list[tuple[int, Mapping[str, Any]]] = [(i + 1, row if isinstance(row, dict) else {"__not_object__": row})
                    for i, row in enumerate(rows)]  # fmt: skip
        if section == "links":
            raw.links = numbered
        else:
            setattr(raw, section, numbered)
    if not raw.matters and not raw.documents and raw.links is None:
        raise CatalogueError(f"{path}: no 'matters', 'documents' or 'links' in the catalogue")
    return raw


def _decode(data: bytes, path: Path) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise CatalogueError(f"{path}: neither UTF-8 nor GB18030 text")


def _read_csv(path: Path) -> list[tuple[int, Mapping[str, Any]]]:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CatalogueError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    text = _decode(path.read_bytes(), path)
    if not text.strip():
        raise CatalogueError(f"{path}: empty file")
    try:
        dialect: Any = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    # field sizes are checked per value below; the csv module's own limit would only crash
    csv.field_size_limit(MAX_FILE_BYTES)
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    try:
        # the header is line 1, so a data row's number is its line number in the file
        return [(reader.line_num, dict(row)) for row in reader]
    except csv.Error as exc:
        raise CatalogueError(f"{path}: unreadable CSV at line {reader.line_num}: {exc}") from exc


def _read_csv_dir(path: Path) -> RawCatalogue:
    present = {k: path / name for k, name in CSV_FILES.items() if (path / name).is_file()}
    if "matters" not in present and "documents" not in present:
        raise CatalogueError(
            f"{path}: a CSV catalogue directory needs matters.csv and/or documents.csv"
        )
    raw = RawCatalogue()
    if "matters" in present:
        raw.matters = _read_csv(present["matters"])
    if "documents" in present:
        raw.documents = _read_csv(present["documents"])
    if "links" in present:
        raw.links = _read_csv(present["links"])
    return raw


def catalogue_sha256(path: Path) -> str:
    """SHA-256 of a catalogue file, or of a directory's catalogue CSVs in a fixed order."""
    digest = hashlib.sha256()
    files = (
        [path / n for n in CSV_FILES.values() if (path / n).is_file()] if path.is_dir() else [path]
    )
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


# -------------------------------------------------------------------------------- validation


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:
        return None
    text = str(value).strip()
    return text or None


class _Checker:
    """Collects problems for one section while cleaning its rows."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.problems: list[Issue] = []

    def add(self, row: int, rid: str | None, name: str, value: Any, reason: str) -> None:
        shown = None if value is None else str(value)[:120]
        self.problems.append(Issue(row, rid, name, shown, reason, section=self.section))

    def text(
        self, row: int, rid: str | None, raw: Mapping[str, Any], name: str, limit: int,
        *, required: bool = False,
    ) -> str | None:  # fmt: skip
        value = raw.get(name)
        if value is not None and not isinstance(value, str | int | float):
            self.add(row, rid, name, value, f"must be text, got {type(value).__name__}")
            return None
        text = _text(value)
        if text is None:
            if required:
                self.add(row, rid, name, None, "is required")
            return None
        if len(text) > limit:
            self.add(row, rid, name, text, f"is longer than {limit} characters")
            return None
        return text


def _id(checker: _Checker, row: int, raw: Mapping[str, Any], seen: dict[str, int]) -> str | None:
    rid = checker.text(row, None, raw, "id", MAX_ID, required=True)
    if rid is None:
        return None
    if any(c.isspace() for c in rid) or "/" in rid:
        checker.add(row, rid, "id", rid, "must not contain whitespace or '/'")
        return None
    if rid in seen:
        checker.add(row, rid, "id", rid, f"duplicate id (first in row {seen[rid]})")
        return None
    seen[rid] = row
    return rid


def _not_object(checker: _Checker, row: int, raw: Mapping[str, Any]) -> bool:
    if "__not_object__" in raw:
        checker.add(row, None, "row", raw["__not_object__"], "must be an object")
        return True
    return False


def _published(checker: _Checker, row: int, rid: str | None, value: Any) -> date | None:
    text = _text(value)
    if text is None:
        return None
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        checker.add(row, rid, "published_at", text, "must be an ISO date YYYY-MM-DD")
        return None


def _url(checker: _Checker, row: int, rid: str | None, raw: Mapping[str, Any]) -> str | None:
    url = checker.text(row, rid, raw, "url", MAX_URL)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        checker.add(row, rid, "url", url, "must be an absolute http:// or https:// URL")
        return None
    return url


def _matter_ids(checker: _Checker, row: int, rid: str | None, value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        items: list[Any] = [v for part in value.split("|") for v in part.split(";")]
    elif isinstance(value, list):
        items = value
    else:
        checker.add(row, rid, "matter_ids", value, "must be a list of matter ids")
        return []
    ids = [t for t in (_text(v) for v in items) if t is not None]
    if len(ids) > MAX_MATTERS_PER_DOCUMENT:
        checker.add(row, rid, "matter_ids", len(ids),
                    f"more than {MAX_MATTERS_PER_DOCUMENT} matters")  # fmt: skip
        return []
    return list(dict.fromkeys(ids))


def validate_catalogue(raw: RawCatalogue, existing_matters: Iterable[str] = ()) -> Catalogue:
    """Clean and check every row; CatalogueInvalid listing every problem when any is found.

    `existing_matters` are matter ids already stored: documents and links may refer to them.
    """
    out = Catalogue()
    matters = _Checker("matters")
    out.matters, matter_ids = _valid_matters(matters, raw.matters)
    known = set(existing_matters) | matter_ids
    documents = _Checker("documents")
    out.documents, out.document_matters = _valid_documents(documents, raw.documents, known)
    problems = matters.problems + documents.problems
    if raw.links is not None:
        links = _Checker("links")
        out.links = _valid_links(links, raw.links, known)
        problems += links.problems
    if problems:
        raise CatalogueInvalid(problems)
    return out


def _records(
    check: _Checker, rows: list[tuple[int, Mapping[str, Any]]], seen: dict[str, int]
) -> Iterator[tuple[int, Mapping[str, Any], str | None]]:
    """(row, record, its id) of each row that is a JSON object; the others are reported."""
    for row, rec in rows:
        if not _not_object(check, row, rec):
            yield row, rec, _id(check, row, rec, seen)


def _one_of(
    check: _Checker,
    row: int,
    rid: str | None,
    rec: Mapping[str, Any],
    field: str,
    allowed: Mapping[str, Any],
) -> str | None:
    """A required key that must be one of `allowed` (reported and None otherwise)."""
    value = check.text(row, rid, rec, field, MAX_ID, required=True)
    if value is not None and value not in allowed:
        check.add(row, rid, field, value, f"must be one of {', '.join(allowed)}")
        return None
    return value


def _valid_matters(
    check: _Checker, rows: list[tuple[int, Mapping[str, Any]]]
) -> tuple[list[dict[str, Any]], set[str]]:
    """The valid matters, and every matter id the file names (valid rows or not)."""
    valid: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row, rec, rid in _records(check, rows, seen):
        title = check.text(row, rid, rec, "title", MAX_TITLE, required=True)
        domain = _one_of(check, row, rid, rec, "domain", DOMAINS)
        matter = {
            "id": rid,
            "title": title,
            "title_en": check.text(row, rid, rec, "title_en", MAX_TITLE),
            "domain": domain,
            "department": check.text(row, rid, rec, "department", MAX_TEXT),
        }
        if rid and title and domain:
            valid.append(matter)
    return valid, set(seen)


def _valid_documents(
    check: _Checker, rows: list[tuple[int, Mapping[str, Any]]], known: set[str]
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The valid documents and their (document, matter) pairs; `known`: the matter ids."""
    valid: list[dict[str, Any]] = []
    pairs: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for row, rec, rid in _records(check, rows, seen):
        title = check.text(row, rid, rec, "title", MAX_TITLE, required=True)
        category = _one_of(check, row, rid, rec, "category", CATEGORIES)
        before = len(check.problems)
        document = {
            "id": rid,
            "title": title,
            "title_en": check.text(row, rid, rec, "title_en", MAX_TITLE),
            "body": check.text(row, rid, rec, "body", MAX_BODY),
            "url": _url(check, row, rid, rec),
            "category": category,
            "published_at": _published(check, row, rid, rec.get("published_at")),
            "issuer": check.text(row, rid, rec, "issuer", MAX_TEXT),
            "doc_number": check.text(row, rid, rec, "doc_number", MAX_TEXT),
        }
        matter_ids = _matter_ids(check, row, rid, rec.get("matter_ids"))
        for matter_id in matter_ids:
            if matter_id not in known:
                check.add(row, rid, "matter_ids", matter_id, "names no matter in the catalogue")
        if rid and title and category and len(check.problems) == before:
            valid.append(document)
            pairs += [(rid, m) for m in matter_ids]
    return valid, pairs


def _valid_links(
    check: _Checker, rows: list[tuple[int, Mapping[str, Any]]], known: set[str]
) -> list[dict[str, Any]]:
    """The valid manual links; `known`: the matter ids."""
    valid: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, str], int] = {}
    for row, rec in rows:
        if _not_object(check, row, rec):
            continue
        source = check.text(row, None, rec, "source", MAX_ID, required=True)
        source_id = check.text(row, None, rec, "source_id", MAX_ID, required=True)
        link_matter = check.text(row, None, rec, "matter_id", MAX_ID, required=True)
        if link_matter is not None and link_matter not in known:
            check.add(row, None, "matter_id", link_matter, "names no matter in the catalogue")
            link_matter = None
        exclude_raw = rec.get("exclude")
        exclude = parse_tristate(exclude_raw) if _text(exclude_raw) is not None else False
        if exclude is None:
            check.add(row, None, "exclude", exclude_raw, "must be true or false")
        if source and source_id and link_matter and exclude is not None:
            key = (source, source_id, link_matter)
            if key in seen:
                check.add(row, None, "matter_id", link_matter,
                          f"duplicate link (first in row {seen[key]})")  # fmt: skip
                continue
            seen[key] = row
            valid.append({"source": source, "source_id": source_id,
                          "matter_id": link_matter, "exclude": exclude})  # fmt: skip
    return valid


# ------------------------------------------------------------------------------------ loading

# dropped first: inside a caller's transaction ON COMMIT DROP has not dropped them yet
_STAGING = """
DROP TABLE IF EXISTS matter_staging, document_staging, document_matter_staging, link_staging;
CREATE TEMP TABLE matter_staging (
    id text NOT NULL, title text NOT NULL, title_en text, domain text NOT NULL, department text
) ON COMMIT DROP;
CREATE TEMP TABLE document_staging (
    id text NOT NULL, title text NOT NULL, title_en text, body text, url text,
    category text NOT NULL, published_at date, issuer text, doc_number text
) ON COMMIT DROP;
CREATE TEMP TABLE document_matter_staging (
    document_id text NOT NULL, matter_id text NOT NULL
) ON COMMIT DROP;
CREATE TEMP TABLE link_staging (
    source text NOT NULL, source_id text NOT NULL, matter_id text NOT NULL,
    exclude boolean NOT NULL
) ON COMMIT DROP;
"""

_UPSERT_MATTERS = """
WITH staged AS (
    SELECT s.*, md5(jsonb_build_array(s.title, s.title_en, s.domain, s.department)::text) AS h
    FROM matter_staging s
), written AS (
    INSERT INTO matters AS m (id, title, title_en, domain, department, content_hash)
    SELECT id, title, title_en, domain, department, h FROM staged
    ON CONFLICT (id) DO UPDATE SET
        title = EXCLUDED.title, title_en = EXCLUDED.title_en, domain = EXCLUDED.domain,
        department = EXCLUDED.department, content_hash = EXCLUDED.content_hash,
        updated_at = now()
    WHERE m.content_hash IS DISTINCT FROM EXCLUDED.content_hash
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated,
       (SELECT count(*) FROM matter_staging) AS read
FROM written
"""

_UPSERT_DOCUMENTS = """
WITH dm AS (
    SELECT document_id, jsonb_agg(matter_id ORDER BY matter_id) AS ids
    FROM document_matter_staging GROUP BY document_id
), staged AS (
    SELECT s.*,
           md5(jsonb_build_array(s.title, s.title_en, s.body, s.url, s.category, s.published_at,
                                 s.issuer, s.doc_number, coalesce(dm.ids, '[]'::jsonb))::text) AS h
    FROM document_staging s LEFT JOIN dm ON dm.document_id = s.id
), written AS (
    INSERT INTO documents AS d (id, title, title_en, body, url, category, published_at, issuer,
                                doc_number, content_hash)
    SELECT id, title, title_en, body, url, category, published_at, issuer, doc_number, h
    FROM staged
    ON CONFLICT (id) DO UPDATE SET
        title = EXCLUDED.title, title_en = EXCLUDED.title_en, body = EXCLUDED.body,
        url = EXCLUDED.url, category = EXCLUDED.category, published_at = EXCLUDED.published_at,
        issuer = EXCLUDED.issuer, doc_number = EXCLUDED.doc_number,
        content_hash = EXCLUDED.content_hash, updated_at = now()
    WHERE d.content_hash IS DISTINCT FROM EXCLUDED.content_hash
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated,
       (SELECT count(*) FROM document_staging) AS read
FROM written
"""

# a staged document's matter list replaces its stored one
_SYNC_DOCUMENT_MATTERS = """
WITH removed AS (
    DELETE FROM document_matters dm
    USING document_staging s
    WHERE dm.document_id = s.id
      AND NOT EXISTS (SELECT 1 FROM document_matter_staging x
                      WHERE x.document_id = dm.document_id AND x.matter_id = dm.matter_id)
    RETURNING 1
), added AS (
    INSERT INTO document_matters (document_id, matter_id)
    SELECT document_id, matter_id FROM document_matter_staging
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM added) AS inserted, (SELECT count(*) FROM removed) AS removed,
       (SELECT count(*) FROM document_matter_staging) AS read
"""

# the file's links section is the complete list of manual links
_SYNC_LINKS = """
WITH removed AS (
    DELETE FROM manual_links ml
    WHERE NOT EXISTS (SELECT 1 FROM link_staging s
                      WHERE s.source = ml.source AND s.source_id = ml.source_id
                        AND s.matter_id = ml.matter_id)
    RETURNING 1
), written AS (
    INSERT INTO manual_links AS ml (source, source_id, matter_id, exclude)
    SELECT source, source_id, matter_id, exclude FROM link_staging
    ON CONFLICT (source, source_id, matter_id) DO UPDATE SET exclude = EXCLUDED.exclude
    WHERE ml.exclude IS DISTINCT FROM EXCLUDED.exclude
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated,
       (SELECT count(*) FROM removed) AS removed,
       (SELECT count(*) FROM link_staging) AS read
FROM written
"""

_FULL_REMOVE = """
WITH d AS (
    DELETE FROM documents x WHERE NOT EXISTS (SELECT 1 FROM document_staging s WHERE s.id = x.id)
    RETURNING 1
), m AS (
    DELETE FROM matters x WHERE NOT EXISTS (SELECT 1 FROM matter_staging s WHERE s.id = x.id)
    RETURNING 1
)
SELECT (SELECT count(*) FROM d) AS documents, (SELECT count(*) FROM m) AS matters
"""


def _copy(cur: psycopg.Cursor[Any], table: str, columns: tuple[str, ...], rows: Iterator[tuple[Any, ...]]) -> None:  # fmt: skip
    # table and column names are this module's own constants, never input
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _one(cur: psycopg.Cursor[Any]) -> dict[str, Any]:
    row = cur.fetchone()
    assert row is not None
    return dict(row) if isinstance(row, dict) else dict(zip([d.name for d in cur.description or []], row, strict=True))  # fmt: skip


def existing_matter_ids(conn: psycopg.Connection[Any]) -> set[str]:
    """Matter ids already stored (documents and links in a new file may refer to them)."""
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM matters")
        return {r["id"] if isinstance(r, dict) else r[0] for r in cur.fetchall()}


def load_catalogue(
    conn: psycopg.Connection[Any], catalogue: Catalogue, *, full: bool = False
) -> LoadReport:
    """Stage and upsert a validated catalogue in one transaction; unchanged rows stay untouched.

    With `full`, matters and documents absent from the catalogue are deleted (their links go
    with them). Manual links are replaced by the catalogue's when it has a links section.
    """
    report = LoadReport()
    matter_cols = MATTER_FIELDS
    doc_cols = DOCUMENT_FIELDS[:-1]
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_STAGING)
        _copy(cur, "matter_staging", matter_cols,
              (tuple(m[c] for c in matter_cols) for m in catalogue.matters))  # fmt: skip
        _copy(cur, "document_staging", doc_cols,
              (tuple(d[c] for c in doc_cols) for d in catalogue.documents))  # fmt: skip
        _copy(cur, "document_matter_staging", ("document_id", "matter_id"),
              iter(catalogue.document_matters))  # fmt: skip
        # temporary tables have no statistics until analysed; the joins below need them
        cur.execute(
            "ANALYZE matter_staging; ANALYZE document_staging; ANALYZE document_matter_staging"
        )
        cur.execute(_UPSERT_MATTERS)
        report.counts["matters"] = _counts(_one(cur))
        cur.execute(_UPSERT_DOCUMENTS)
        report.counts["documents"] = _counts(_one(cur))
        cur.execute(_SYNC_DOCUMENT_MATTERS)
        report.counts["document_matters"] = _counts(_one(cur))
        if catalogue.links is not None:
            _copy(cur, "link_staging", LINK_FIELDS,
                  (tuple(link[c] for c in LINK_FIELDS) for link in catalogue.links))  # fmt: skip
            cur.execute(_SYNC_LINKS)
            report.counts["manual_links"] = _counts(_one(cur))
        if full:
            cur.execute(_FULL_REMOVE)
            gone = _one(cur)
            report.counts["documents"]["removed"] = int(gone["documents"])
            report.counts["matters"]["removed"] = int(gone["matters"])
    return report


def _counts(row: Mapping[str, Any]) -> dict[str, int]:
    counts = {k: int(row.get(k) or 0) for k in ("read", "inserted", "updated", "removed")}
    counts["unchanged"] = max(0, counts["read"] - counts["inserted"] - counts["updated"])
    return counts


def _record(
    conn: psycopg.Connection[Any],
    path: Path,
    *,
    sha256: str | None,
    started: float,
    outcome: str,
    report: LoadReport | None = None,
    problems: list[Issue] | None = None,
) -> None:
    """Record one catalogue load (ok, failed or dry_run) in ingest_runs, kind 'disclosures'."""
    counts = report.counts if report else {}
    body: dict[str, Any] = {"counts": counts}
    if problems:
        body["rejects"] = [p.as_dict() for p in problems[:MAX_STORED_ISSUES]]
        body["rejected_total"] = len(problems)
    totals = (
        {k: report.total(k) for k in ("read", "inserted", "updated", "unchanged", "removed")}
        if report
        else {}
    )
    record_run(
        conn,
        kind="disclosures",
        source="catalogue",
        path=str(path),
        file_sha256=sha256,
        duration_s=time.monotonic() - started,
        counts={**totals, "rejected": len(problems or [])},
        outcome=outcome,
        report=body,
    )


def ingest_catalogue(
    conn: psycopg.Connection[Any], path: Path, *, full: bool = False, dry_run: bool = False
) -> LoadReport:
    """Read, validate and load a catalogue atomically; the run is recorded in ingest_runs.

    Raises CatalogueError (unreadable) or CatalogueInvalid (rows refused); nothing is written
    to the catalogue tables then.
    """
    started = time.monotonic()
    sha = catalogue_sha256(path) if path.exists() else None
    try:
        raw = read_catalogue(path)
        # its own transaction: no implicit one left open to turn the load into a savepoint
        with conn.transaction():
            known = existing_matter_ids(conn)
        catalogue = validate_catalogue(raw, known)
    except CatalogueInvalid as exc:
        _record(conn, path, sha256=sha, started=started, outcome="failed",
                   problems=exc.problems)  # fmt: skip
        raise
    except CatalogueError as exc:
        problem = Issue(0, None, "file", None, str(exc), section="file")
        _record(conn, path, sha256=sha, started=started, outcome="failed", problems=[problem])
        raise
    if dry_run:
        report = LoadReport({
            "matters": _counts({"read": len(catalogue.matters)}),
            "documents": _counts({"read": len(catalogue.documents)}),
        })  # fmt: skip
        _record(conn, path, sha256=sha, started=started, outcome="dry_run", report=report)
        return report
    report = load_catalogue(conn, catalogue, full=full)
    report.duration_s = time.monotonic() - started
    _record(conn, path, sha256=sha, started=started, outcome="ok", report=report)
    return report
