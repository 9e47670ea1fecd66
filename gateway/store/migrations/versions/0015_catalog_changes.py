"""datasets added, changed and removed while the gateway runs

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_change",
        sa.Column("version", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("entry", sa.Text(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=160), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_catalog_change")),
    )
    op.create_index(op.f("ix_catalog_change_dataset"), "catalog_change", ["dataset"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_catalog_change_dataset"), table_name="catalog_change")
    op.drop_table("catalog_change")
