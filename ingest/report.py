"""What an ingest run found and did: per-row issues, counts, the JSON report, the summary rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: issues kept per run (the counts go on beyond it): a broken million-row file stays bounded
MAX_ISSUES = 10_000
#: issues stored in ingest_runs.report (the --report file keeps MAX_ISSUES)
MAX_STORED_ISSUES = 1_000
#: characters of an offending value echoed in a report
MAX_VALUE_CHARS = 200

Severity = Literal["error", "warning"]

#: what "row N" counts, by the kind of file (a reader's `Source.row_label`)
ROW_MEANINGS = {
    "line": "row = the line of the file (the header is line 1)",
    "row": "row = the sheet's row as the spreadsheet numbers it",
    "record": "row = the record's position in the file (the first record is 1)",
}


class IngestError(Exception):
    """A whole-file problem (unreadable, unknown layer, missing column): one clear line."""


@dataclass(frozen=True)
class Issue:
    """One problem with one value: where it is, which field, what it was, why it is refused.

    Both loaders report with it. A facility file places it by row number and feature id; the
    disclosure catalogue by `section` (matters, documents, links or file), row and record id.
    Each keeps its own wording in text and JSON (`where`, `as_dict`).
    """

    row: int | None
    #: the record's id in the file: a feature id (facilities) or a matter/document id
    record_id: str | None
    field: str
    value: str | None
    reason: str
    severity: Severity = "error"
    #: the catalogue section it is in; None in a facility file
    section: str | None = None

    def where(self) -> str:
        """'row 12', 'feature node/42' (both when known), or 'documents row 3 (id 'd1')'."""
        if self.section is not None:
            who = f" (id {self.record_id!r})" if self.record_id else ""
            return f"{self.section} row {self.row}{who}"
        parts = []
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.record_id is not None:
            parts.append(f"feature {self.record_id}")
        return " ".join(parts) or "file"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for reports."""
        if self.section is not None:
            return {
                "section": self.section,
                "row": self.row,
                "id": self.record_id,
                "field": self.field,
                "value": self.value,
                "reason": self.reason,
            }
        return {
            "row": self.row,
            "feature_id": self.record_id,
            "field": self.field,
            "value": self.value,
            "reason": self.reason,
            "severity": self.severity,
        }

    def __str__(self) -> str:
        shown = "" if self.value is None else f" = {self.value!r}"
        return f"{self.where()}: {self.field}{shown}: {self.reason}"


def shown_value(value: Any) -> str | None:
    """A value as reported: text, cut to MAX_VALUE_CHARS with its full length noted."""
    if value is None:
        return None
    text = str(value)
    if len(text) > MAX_VALUE_CHARS:
        return f"{text[:MAX_VALUE_CHARS]}… ({len(text):,} characters)"
    return text


@dataclass
class IngestReport:
    """Counts and issues of one run; `outcome` is ok, failed or dry_run."""

    path: str
    source: str | None = None
    layer: str | None = None
    file_sha256: str | None = None
    outcome: str = "failed"
    reason: str | None = None
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    rejected: int = 0
    warnings: int = 0
    errors: int = 0
    duration_s: float = 0.0
    crs: str | None = None
    format: str | None = None
    #: what its row numbers count: "line" (CSV), "row" (a sheet's) or "record" (ROW_MEANINGS)
    row_label: str = "record"
    #: the Excel sheet read
    sheet: str | None = None
    issues: list[Issue] = field(default_factory=list)
    issues_dropped: int = 0

    def add(self, issue: Issue) -> None:
        """Record an issue (kept up to MAX_ISSUES; always counted)."""
        if issue.severity == "warning":
            self.warnings += 1
        else:
            self.errors += 1
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(issue)
        else:
            self.issues_dropped += 1

    def extend(self, issues: list[Issue]) -> None:
        """Record several issues."""
        for issue in issues:
            self.add(issue)

    @property
    def error_issues(self) -> list[Issue]:
        """The kept issues that are errors."""
        return [i for i in self.issues if i.severity == "error"]

    def counts(self) -> dict[str, int]:
        """The summary counts."""
        return {
            "read": self.read,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "rejected": self.rejected,
            "warnings": self.warnings,
        }

    def to_dict(self, max_issues: int = MAX_ISSUES) -> dict[str, Any]:
        """JSON-ready form: summary, then the issues (rejects first)."""
        ordered = sorted(self.issues, key=lambda i: i.severity != "error")
        kept = ordered[:max_issues]
        return {
            "path": self.path,
            "source": self.source,
            "layer": self.layer,
            "format": self.format,
            "sheet": self.sheet,
            "crs": self.crs,
            "row_numbers": self.row_numbers(),
            "file_sha256": self.file_sha256,
            "outcome": self.outcome,
            "reason": self.reason,
            **self.counts(),
            "duration_s": round(self.duration_s, 3),
            "rejects": [i.as_dict() for i in kept if i.severity == "error"],
            "warning_list": [i.as_dict() for i in kept if i.severity == "warning"],
            "issues_not_listed": self.issues_dropped + len(ordered) - len(kept),
        }

    def write_json(self, path: Path) -> None:
        """Write the machine-readable report (`--report FILE.json`)."""
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")

    def row_numbers(self) -> str:
        """What "row N" means in this report, in words."""
        return ROW_MEANINGS.get(self.row_label, ROW_MEANINGS["record"])

    def summary_row(self) -> dict[str, Any]:
        """One row for the CLI summary table."""
        return {"source": self.source or "", "outcome": self.outcome, **self.counts()}

    def failure_line(self) -> str:
        """The one-line reason a failed run gives on stderr."""
        if self.reason:
            return self.reason
        first = self.error_issues[:1]
        detail = f" (first: {first[0]})" if first else ""
        return f"{self.rejected:,} invalid row(s){detail}; nothing written"
