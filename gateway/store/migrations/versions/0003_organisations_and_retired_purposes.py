"""organisations, retired purposes

Organisations become rows of their own (existing principals' organisations are registered as they are).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    organisation = op.create_table(
        "organisation",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("display_name", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisation")),
    )
    with op.batch_alter_table("purpose", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))
    existing = op.get_bind().execute(sa.text("SELECT DISTINCT organisation FROM principal")).scalars().all()
    now = datetime.now(UTC)
    op.bulk_insert(organisation, [{"id": org, "display_name": org, "created_at": now} for org in existing])


def downgrade() -> None:
    with op.batch_alter_table("purpose", schema=None) as batch_op:
        batch_op.drop_column("retired_at")
    op.drop_table("organisation")
