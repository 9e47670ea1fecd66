"""(epsilon, delta) budgets and reserved spends

Grants may carry a delta allowance (for queries that select group keys from the data); each ledger
entry records its delta and whether it is reserved, released or failed.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delta_per_period", sa.Float(), nullable=True))
    with op.batch_alter_table("budget_spend", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delta", sa.Float(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("status", sa.String(length=16), server_default="released", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("budget_spend", schema=None) as batch_op:
        batch_op.drop_column("status")
        batch_op.drop_column("delta")
    with op.batch_alter_table("grant", schema=None) as batch_op:
        batch_op.drop_column("delta_per_period")
