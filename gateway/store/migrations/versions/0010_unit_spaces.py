"""privacy budgets per privacy-unit space: each ledger entry records the unit space it counts against

Existing entries get their own dataset as their space, which is what they counted against before; the
gateway then moves them into the space the catalog gives their dataset (``assign_unit_spaces``), so an
upgrade hands out no fresh budget.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("budget_spend", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unit_space", sa.String(length=128), nullable=True))
    op.execute("UPDATE budget_spend SET unit_space = dataset")
    with op.batch_alter_table("budget_spend", schema=None) as batch_op:
        batch_op.alter_column("unit_space", existing_type=sa.String(length=128), nullable=False)
        batch_op.create_index("ix_budget_spend_unit_space_spent_at", ["unit_space", "spent_at"], unique=False)
        batch_op.create_index(
            "ix_budget_spend_principal_id_unit_space_spent_at",
            ["principal_id", "unit_space", "spent_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("budget_spend", schema=None) as batch_op:
        batch_op.drop_index("ix_budget_spend_principal_id_unit_space_spent_at")
        batch_op.drop_index("ix_budget_spend_unit_space_spent_at")
        batch_op.drop_column("unit_space")
