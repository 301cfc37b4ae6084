"""Service halls: set-up (windows, matters, slot grid), slots with capacity, cases (appointments
and walk-ins) with their progress, queue tickets, evaluations.

Never more bookings than capacity: ``hall_slots.booked`` is raised by one
``INSERT … ON CONFLICT DO UPDATE … WHERE booked < capacity`` (the row lock serialises the
bookings of one slot) and ``hall_slots_booked_check`` refuses any row with more.
One booking per phone per matter per day: the partial unique index ``hall_cases_phone_day_key``.

Revision ID: 0007
Revises: 0006

Frozen history: the tables are written out as they were created, never imported from the
models (which describe today's schema; tests/geoservice/test_schema.py compares the two).
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = (
    "hall_evaluations",
    "hall_tickets",
    "hall_ticket_counters",
    "hall_case_events",
    "hall_cases",
    "hall_slots",
    "hall_matters",
    "hall_window_matters",
    "hall_windows",
    "halls",
)


def _now(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "halls",
        sa.Column("facility_id", sa.Text(), nullable=False),
        sa.Column("slot_minutes", sa.SmallInteger(), nullable=False),
        sa.Column("booking_days_ahead", sa.SmallInteger(), nullable=False),
        sa.Column("hours", sa.Text()),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("facility_id", name="halls_pkey"),
        sa.ForeignKeyConstraint(
            ["facility_id"], ["facilities.id"], name="halls_facility_id_fkey", ondelete="CASCADE"
        ),
        sa.CheckConstraint("slot_minutes BETWEEN 5 AND 240", name="halls_slot_minutes_check"),
        sa.CheckConstraint(
            "booking_days_ahead BETWEEN 0 AND 90", name="halls_booking_days_ahead_check"
        ),
    )

    op.create_table(
        "hall_windows",
        sa.Column("hall_id", sa.Text(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("hall_id", "id", name="hall_windows_pkey"),
        sa.ForeignKeyConstraint(
            ["hall_id"], ["halls.facility_id"], name="hall_windows_hall_id_fkey", ondelete="CASCADE"
        ),
    )

    op.create_table(
        "hall_window_matters",
        sa.Column("hall_id", sa.Text(), nullable=False),
        sa.Column("window_id", sa.Text(), nullable=False),
        sa.Column("matter_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "hall_id", "window_id", "matter_id", name="hall_window_matters_pkey"
        ),
        sa.ForeignKeyConstraint(
            ["hall_id"],
            ["halls.facility_id"],
            name="hall_window_matters_hall_id_fkey",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["matter_id"],
            ["matters.id"],
            name="hall_window_matters_matter_id_fkey",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "hall_window_matters_matter_idx", "hall_window_matters", ["hall_id", "matter_id"]
    )

    op.create_table(
        "hall_matters",
        sa.Column("hall_id", sa.Text(), nullable=False),
        sa.Column("matter_id", sa.Text(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("queue_group", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("hall_id", "matter_id", name="hall_matters_pkey"),
        sa.ForeignKeyConstraint(
            ["hall_id"], ["halls.facility_id"], name="hall_matters_hall_id_fkey", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["matter_id"], ["matters.id"], name="hall_matters_matter_id_fkey", ondelete="CASCADE"
        ),
        sa.CheckConstraint("capacity BETWEEN 1 AND 1000", name="hall_matters_capacity_check"),
    )
    op.create_index("hall_matters_matter_idx", "hall_matters", ["matter_id"])

    op.create_table(
        "hall_slots",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("hall_id", sa.Text(), nullable=False),
        sa.Column("matter_id", sa.Text(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("booked", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name="hall_slots_pkey"),
        sa.ForeignKeyConstraint(
            ["hall_id"], ["halls.facility_id"], name="hall_slots_hall_id_fkey", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["matter_id"], ["matters.id"], name="hall_slots_matter_id_fkey", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("hall_id", "matter_id", "starts_at", name="hall_slots_start_key"),
        sa.CheckConstraint("booked >= 0 AND booked <= capacity", name="hall_slots_booked_check"),
        sa.CheckConstraint("ends_at > starts_at", name="hall_slots_period_check"),
    )

    op.create_table(
        "hall_cases",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("hall_id", sa.Text(), nullable=False),
        sa.Column("matter_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("slot_id", sa.BigInteger()),
        sa.Column("starts_at", sa.DateTime(timezone=True)),
        sa.Column("ends_at", sa.DateTime(timezone=True)),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("phone", sa.Text()),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("client_hash", sa.Text()),
        _now("created_at"),
        _now("updated_at"),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("erased_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="hall_cases_pkey"),
        sa.UniqueConstraint("code", name="hall_cases_code_key"),
        sa.ForeignKeyConstraint(
            ["hall_id"], ["halls.facility_id"], name="hall_cases_hall_id_fkey", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["matter_id"], ["matters.id"], name="hall_cases_matter_id_fkey", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["slot_id"], ["hall_slots.id"], name="hall_cases_slot_id_fkey", ondelete="SET NULL"
        ),
        sa.CheckConstraint("kind IN ('appointment', 'walk_in')", name="hall_cases_kind_check"),
        sa.CheckConstraint(
            "status IN ('booked', 'checked_in', 'called', 'done', 'needs_documents', 'referred',"
            " 'cancelled', 'lapsed', 'no_show')",
            name="hall_cases_status_check",
        ),
        sa.CheckConstraint("name IS NULL OR char_length(name) <= 50", name="hall_cases_name_check"),
    )
    op.create_index(
        "hall_cases_phone_day_key",
        "hall_cases",
        ["phone", "matter_id", "day"],
        unique=True,
        postgresql_where=sa.text("phone IS NOT NULL AND status <> 'cancelled'"),
    )
    op.create_index("hall_cases_hall_day_idx", "hall_cases", ["hall_id", "day"])
    op.create_index("hall_cases_client_idx", "hall_cases", ["client_hash", "created_at"])
    op.create_index(
        "hall_cases_booked_idx",
        "hall_cases",
        ["starts_at"],
        postgresql_where=sa.text("status = 'booked'"),
    )
    op.create_index(
        "hall_cases_ended_idx",
        "hall_cases",
        ["ended_at"],
        postgresql_where=sa.text("erased_at IS NULL"),
    )

    op.create_table(
        "hall_case_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        _now("at"),
        sa.Column("detail", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="hall_case_events_pkey"),
        sa.ForeignKeyConstraint(
            ["case_id"], ["hall_cases.id"], name="hall_case_events_case_id_fkey", ondelete="CASCADE"
        ),
    )
    op.create_index("hall_case_events_case_idx", "hall_case_events", ["case_id", "at"])

    op.create_table(
        "hall_ticket_counters",
        sa.Column("hall_id", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("queue_group", sa.Text(), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("hall_id", "day", "queue_group", name="hall_ticket_counters_pkey"),
        sa.ForeignKeyConstraint(
            ["hall_id"],
            ["halls.facility_id"],
            name="hall_ticket_counters_hall_id_fkey",
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "hall_tickets",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("hall_id", sa.Text(), nullable=False),
        sa.Column("matter_id", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("queue_group", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("number", sa.Text(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True)),
        _now("issued_at"),
        sa.Column("status", sa.Text(), server_default="waiting", nullable=False),
        sa.Column("window_id", sa.Text()),
        sa.Column("called_at", sa.DateTime(timezone=True)),
        sa.Column("calls", sa.Integer(), server_default="0", nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("outcome", sa.Text()),
        sa.PrimaryKeyConstraint("id", name="hall_tickets_pkey"),
        sa.UniqueConstraint("case_id", name="hall_tickets_case_id_key"),
        sa.UniqueConstraint("hall_id", "day", "queue_group", "seq", name="hall_tickets_number_key"),
        sa.ForeignKeyConstraint(
            ["case_id"], ["hall_cases.id"], name="hall_tickets_case_id_fkey", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["hall_id"], ["halls.facility_id"], name="hall_tickets_hall_id_fkey", ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "status IN ('waiting', 'called', 'done', 'no_show')", name="hall_tickets_status_check"
        ),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('done', 'needs_documents', 'referred')",
            name="hall_tickets_outcome_check",
        ),
    )
    op.create_index(
        "hall_tickets_open_idx",
        "hall_tickets",
        ["hall_id", "status"],
        postgresql_where=sa.text("status IN ('waiting', 'called')"),
    )
    op.create_index(
        "hall_tickets_service_idx", "hall_tickets", ["hall_id", "matter_id", "finished_at"]
    )

    op.create_table(
        "hall_evaluations",
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("hall_id", sa.Text(), nullable=False),
        sa.Column("window_id", sa.Text()),
        sa.Column("matter_id", sa.Text(), nullable=False),
        sa.Column("score", sa.SmallInteger(), nullable=False),
        sa.Column("comment", sa.Text()),
        _now("created_at"),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
        sa.Column("acknowledged_by", sa.Text()),
        sa.PrimaryKeyConstraint("case_id", name="hall_evaluations_pkey"),
        sa.ForeignKeyConstraint(
            ["case_id"], ["hall_cases.id"], name="hall_evaluations_case_id_fkey", ondelete="CASCADE"
        ),
        sa.CheckConstraint("score BETWEEN 1 AND 5", name="hall_evaluations_score_check"),
        sa.CheckConstraint(
            "comment IS NULL OR char_length(comment) <= 500", name="hall_evaluations_comment_check"
        ),
    )
    op.create_index("hall_evaluations_hall_idx", "hall_evaluations", ["hall_id", "created_at"])
    op.create_index(
        "hall_evaluations_alert_idx",
        "hall_evaluations",
        ["created_at"],
        postgresql_where=sa.text("score <= 2 AND acknowledged_at IS NULL"),
    )


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table)
