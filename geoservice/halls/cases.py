"""A case's progress and its one evaluation (好差评), and what the staff see of evaluations.

Each state a case reaches is an event with its time (``booked``, ``checked_in``, ``called``,
``done`` / ``needs_documents`` / ``referred``, ``cancelled``, ``lapsed``, ``no_show``). Once
handled, the case can be rated once on the national five-level scale: the evaluation's primary
key is the case, so a second one is a 409 whatever the concurrency. A score of 1 or 2 opens an
alert for the hall's staff until someone acknowledges it.
"""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from geoservice.api.auth import StaffDep
from geoservice.api.deps import PoolDep, PrimaryPoolDep, SettingsDep
from geoservice.api.errors import Conflict, InvalidParameter, NotFound
from geoservice.halls.booking import case_by_code, ticket_of
from geoservice.halls.common import ID_PATTERN, CodePath, DictConn, code_or_404
from geoservice.halls.domain import CONTROL, OUTCOMES, SCALE, mask_name, mask_phone
from geoservice.settings import Settings

router = APIRouter(tags=["service halls"])
staff_router = APIRouter(tags=["service halls (staff)"])

MAX_COMMENT = 500

_EVENTS = "SELECT status, at, detail FROM hall_case_events WHERE case_id = %s ORDER BY at, id"
_EVALUATION = "SELECT score, comment, created_at FROM hall_evaluations WHERE case_id = %s"


async def case_progress(conn: DictConn, code: str, settings: Settings) -> dict[str, Any]:
    """The case with its events, ticket and evaluation."""
    case = await case_by_code(conn, code, settings)
    events = await (await conn.execute(_EVENTS, (case["id"],))).fetchall()
    evaluation = await (await conn.execute(_EVALUATION, (case["id"],))).fetchone()
    ticket = await ticket_of(conn, int(case["id"]))
    return {
        "code": case["code"],
        "kind": case["kind"],
        "hall": case["hall_id"],
        "hall_name": case["hall_name"],
        "matter": case["matter_id"],
        "matter_title": case["matter_title"],
        "start": case["starts_at"].isoformat() if case["starts_at"] else None,
        "status": case["status"],
        "events": [
            {"status": e["status"], "at": e["at"].isoformat(), "detail": e["detail"]}
            for e in events
        ],
        "ticket": ticket,
        "evaluation": {
            "score": evaluation["score"],
            "label": SCALE[int(evaluation["score"])],
            "comment": evaluation["comment"],
            "created_at": evaluation["created_at"].isoformat(),
        }
        if evaluation
        else None,
        "can_evaluate": case["status"] in OUTCOMES and evaluation is None,
    }


@router.get("/api/v1/cases/{code}", summary="A case's progress, each state with its time")
async def get_case(code: CodePath, pool: PrimaryPoolDep, settings: SettingsDep) -> dict[str, Any]:
    """Progress of the case holding this code."""
    key = code_or_404(code, "case")
    async with pool.connection() as conn:
        return await case_progress(conn, key, settings)


class EvaluationIn(BaseModel):
    """A score on the five-level scale (5 非常满意 … 1 非常不满意) and an optional comment."""

    model_config = ConfigDict(extra="forbid", strict=True)

    score: Annotated[int, Field(ge=1, le=5)]
    comment: Annotated[str, Field(max_length=MAX_COMMENT * 4)] | None = None

    @field_validator("comment")
    @classmethod
    def _clean(cls, comment: str | None) -> str | None:
        if comment is None:
            return None
        comment = CONTROL.sub(" ", comment).strip()
        if len(comment) > MAX_COMMENT:
            raise ValueError(f"at most {MAX_COMMENT} characters (got {len(comment)})")
        return comment or None


_EVALUATE = """
INSERT INTO hall_evaluations (case_id, hall_id, window_id, matter_id, score, comment)
SELECT c.id, c.hall_id, t.window_id, c.matter_id, %(score)s, %(comment)s
  FROM hall_cases c LEFT JOIN hall_tickets t ON t.case_id = c.id
 WHERE c.id = %(case)s
RETURNING created_at
"""


@router.post(
    "/api/v1/cases/{code}/evaluation",
    status_code=201,
    summary="Rate a handled case once (5 非常满意 … 1 非常不满意)",
    responses={409: {"description": "already rated, or not handled yet"}},
)
async def evaluate(
    code: CodePath, evaluation: EvaluationIn, pool: PoolDep, settings: SettingsDep
) -> dict[str, Any]:
    """201 once per case; 409 after."""
    key = code_or_404(code, "case")
    async with pool.connection() as conn:
        case = await case_by_code(conn, key, settings)
        if case["status"] not in OUTCOMES:
            raise Conflict(
                f"this case is {case['status'].replace('_', ' ')}; it can be rated once handled"
                f" ({', '.join(OUTCOMES)})"
            )
        params = {"case": case["id"], "score": evaluation.score, "comment": evaluation.comment}
        try:
            row = await (await conn.execute(_EVALUATE, params)).fetchone()
        except psycopg.errors.UniqueViolation:
            raise Conflict("this case has been rated already; one evaluation per case") from None
    assert row is not None
    return {
        "code": key,
        "score": evaluation.score,
        "label": SCALE[evaluation.score],
        "comment": evaluation.comment,
        "created_at": row["created_at"].isoformat(),
        "alert": evaluation.score <= 2,
    }


# --- staff ----------------------------------------------------------------------------------

GROUPINGS = {
    "hall": ("e.hall_id",),
    "window": ("e.hall_id", "e.window_id"),
    "matter": ("e.hall_id", "e.matter_id"),
}
_FIGURES = """
SELECT e.hall_id AS hall, f.name AS hall_name, {window} AS window, {matter} AS matter,
       count(*) AS count, round(avg(e.score), 2) AS average,
       round(100.0 * count(*) FILTER (WHERE e.score >= 4) / count(*), 1) AS satisfied_pct,
       count(*) FILTER (WHERE e.score = 5) AS s5, count(*) FILTER (WHERE e.score = 4) AS s4,
       count(*) FILTER (WHERE e.score = 3) AS s3, count(*) FILTER (WHERE e.score = 2) AS s2,
       count(*) FILTER (WHERE e.score = 1) AS s1
  FROM hall_evaluations e JOIN facilities f ON f.id = e.hall_id
 WHERE (%(hall)s::text IS NULL OR e.hall_id = %(hall)s)
   AND e.created_at > now() - make_interval(days => %(days)s)
 GROUP BY e.hall_id, f.name{group}
 ORDER BY e.hall_id{group}
"""


def figures_query(group_by: str) -> str:
    """The evaluation figures grouped by hall, window or matter (fixed SQL per grouping)."""
    return _FIGURES.format(
        window="e.window_id" if group_by == "window" else "NULL::text",
        matter="e.matter_id" if group_by == "matter" else "NULL::text",
        group="".join(f", {c}" for c in GROUPINGS[group_by][1:]),
    )


def figure_out(row: dict[str, Any]) -> dict[str, Any]:
    """One row of figures as JSON."""
    return {
        "hall": row["hall"], "hall_name": row["hall_name"], "window": row["window"],
        "matter": row["matter"], "count": int(row["count"]),
        "average": float(row["average"]), "satisfied_pct": float(row["satisfied_pct"]),
        "by_score": {str(s): int(row[f"s{s}"]) for s in range(5, 0, -1)},
    }  # fmt: skip


_ALERTS = """
SELECT e.case_id, e.hall_id, f.name AS hall_name, e.window_id, e.matter_id, m.title AS matter_title,
       e.score, e.comment, e.created_at, c.code, c.name, c.phone
  FROM hall_evaluations e
  JOIN hall_cases c ON c.id = e.case_id
  JOIN facilities f ON f.id = e.hall_id
  JOIN matters m ON m.id = e.matter_id
 WHERE e.score <= 2 AND e.acknowledged_at IS NULL
   AND (%(hall)s::text IS NULL OR e.hall_id = %(hall)s)
 ORDER BY e.created_at DESC
 LIMIT 200
"""


async def alerts(conn: DictConn, hall_id: str | None) -> list[dict[str, Any]]:
    """Unacknowledged evaluations scored 1 or 2, newest first (personal data masked)."""
    rows = await (await conn.execute(_ALERTS, {"hall": hall_id})).fetchall()
    return [
        {
            "case": int(r["case_id"]),
            "hall": r["hall_id"],
            "hall_name": r["hall_name"],
            "window": r["window_id"],
            "matter": r["matter_id"],
            "matter_title": r["matter_title"],
            "score": int(r["score"]),
            "label": SCALE[int(r["score"])],
            "comment": r["comment"],
            "created_at": r["created_at"].isoformat(),
            "name": mask_name(r["name"]),
            "phone": mask_phone(r["phone"]),
        }  # fmt: skip
        for r in rows
    ]


HallQuery = Annotated[str | None, Query(pattern=ID_PATTERN, description="one hall")]


@staff_router.get(
    "/api/v1/staff/halls/evaluations",
    summary="Evaluation figures per hall, window or matter, and the open low-score alerts",
)
async def staff_evaluations(
    staff: StaffDep,
    pool: PoolDep,
    hall: HallQuery = None,
    group_by: Annotated[str, Query(max_length=10, description="hall, window or matter")] = "hall",
    days: Annotated[int, Query(ge=1, le=3660, description="evaluations of the last N days")] = 365,
) -> dict[str, Any]:
    """Figures (count, average, % satisfied, per score) and alerts (score 1–2)."""
    if group_by not in GROUPINGS:
        raise InvalidParameter(f"query parameter 'group_by' must be one of {', '.join(GROUPINGS)}")
    async with pool.connection() as conn:
        params = {"hall": hall, "days": days}
        rows = await (await conn.execute(figures_query(group_by), params)).fetchall()
        open_alerts = await alerts(conn, hall)
    return {"group_by": group_by, "figures": [figure_out(r) for r in rows], "alerts": open_alerts}


@staff_router.get("/api/v1/staff/halls/alerts", summary="Cases rated 1 or 2, not yet acknowledged")
async def staff_alerts(staff: StaffDep, pool: PoolDep, hall: HallQuery = None) -> dict[str, Any]:
    """The open low-score alerts."""
    async with pool.connection() as conn:
        return {"alerts": await alerts(conn, hall)}


_ACKNOWLEDGE = """
UPDATE hall_evaluations SET acknowledged_at = now(), acknowledged_by = %s
 WHERE case_id = %s AND score <= 2 AND acknowledged_at IS NULL RETURNING case_id
"""


@staff_router.post(
    "/api/v1/staff/halls/alerts/{case_id}/acknowledge", summary="Close a low-score alert"
)
async def acknowledge(
    case_id: Annotated[int, Path(ge=1, le=2**62)], staff: StaffDep, pool: PoolDep
) -> dict[str, Any]:
    """The alert is closed by this member of staff."""
    async with pool.connection() as conn:
        row = await (await conn.execute(_ACKNOWLEDGE, (staff.name, case_id))).fetchone()
    if row is None:
        raise NotFound(f"no open alert for case {case_id}")
    return {"case": case_id, "acknowledged_by": staff.name}


_MATTER_FIGURES = """
SELECT count(*) AS count, round(avg(score), 2) AS average,
       round(100.0 * count(*) FILTER (WHERE score >= 4) / nullif(count(*), 0), 1) AS satisfied_pct
  FROM hall_evaluations WHERE matter_id = %s
"""


async def matter_figures(conn: DictConn, matter_id: str) -> dict[str, Any]:
    """A matter's public evaluation figures (count, average, % satisfied)."""
    row = await (await conn.execute(_MATTER_FIGURES, (matter_id,))).fetchone()
    assert row is not None
    return {
        "count": int(row["count"]),
        "average": float(row["average"]) if row["average"] is not None else None,
        "satisfied_pct": float(row["satisfied_pct"]) if row["satisfied_pct"] is not None else None,
    }
