"""owners: round-robin turns per target and the owner each delivered message got

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "owner_turns",
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("next_turn", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("target", name=op.f("pk_owner_turns")),
    )
    op.create_table(
        "owner_assignments",
        sa.Column("delivery_id", _ID, nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("record_id", sa.String(length=100), nullable=True),
        sa.Column("record_owner_id", sa.String(length=100), nullable=True),
        sa.Column("owner_id", sa.String(length=100), nullable=True),
        sa.Column("rule", sa.String(length=20), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_owner_assignments_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_owner_assignments")),
    )
    with op.batch_alter_table("owner_assignments", schema=None) as batch_op:
        batch_op.create_index("ix_owner_assignments_record", ["target", "record_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("owner_assignments", schema=None) as batch_op:
        batch_op.drop_index("ix_owner_assignments_record")
    op.drop_table("owner_assignments")
    op.drop_table("owner_turns")
