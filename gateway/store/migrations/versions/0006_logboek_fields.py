"""audit events: caller's span, processing activity, canonical version

Existing events keep canonical version 1 (they verify as they were written); new ones are version 2.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_span_id", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("processing_activity_id", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("canonical_version", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_column("canonical_version")
        batch_op.drop_column("processing_activity_id")
        batch_op.drop_column("parent_span_id")
