"""source state: list-item fingerprints, ids up to 256 characters, skipped-day gaps

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        # The fingerprint of the list item last seen: a summary that hashes the same is
        # unchanged, and its detail is not fetched again.
        batch_op.add_column(sa.Column("summary_hash", sa.String(length=64), nullable=True))
        # The source accepts ids up to 256 characters (syncd.source.parse.MAX_ID).
        batch_op.alter_column(
            "message_id", existing_type=sa.String(length=200), type_=sa.String(length=256)
        )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.alter_column(
            "message_id", existing_type=sa.String(length=200), type_=sa.String(length=256)
        )
    # Days a catch-up cap left unpolled, until a backfill fills them.
    op.create_table(
        "source_gaps",
        sa.Column("account", sa.String(length=100), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "first_day", name=op.f("pk_source_gaps")),
    )


def downgrade() -> None:
    op.drop_table("source_gaps")
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.alter_column(
            "message_id", existing_type=sa.String(length=256), type_=sa.String(length=200)
        )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column(
            "message_id", existing_type=sa.String(length=256), type_=sa.String(length=200)
        )
        batch_op.drop_column("summary_hash")
