"""residents: indexes for pruning old feed items and events (``servicemap notify``).

- ``resident_feed_event_idx`` (event_id): the feed items of an event, so old events' items are
  deleted in bounded batches and an event goes once no item refers to it.
- ``resident_events_fanned_out_idx`` (fanned_out_at): the events fanned out before the
  retention cut-off, found without reading the rest.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("resident_feed_event_idx", "resident_feed", ["event_id"])
    op.create_index("resident_events_fanned_out_idx", "resident_events", ["fanned_out_at"])


def downgrade() -> None:
    op.drop_index("resident_events_fanned_out_idx", table_name="resident_events")
    op.drop_index("resident_feed_event_idx", table_name="resident_feed")
