"""audit events: end time and data subject (canonical version 3)

Existing events keep the version they were written in; new ones are version 3.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("data_subject_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("data_subject_type", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_column("data_subject_type")
        batch_op.drop_column("data_subject_id")
        batch_op.drop_column("completed_at")
