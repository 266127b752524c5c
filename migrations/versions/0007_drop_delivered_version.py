"""deliveries: drop delivered_version, written on every outcome and never read (the version a
delivery carried out is claimed_version; a change while in flight compares against that)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite drops a column by copying the table.
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("delivered_version")


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivered_version", sa.Integer(), nullable=True))
