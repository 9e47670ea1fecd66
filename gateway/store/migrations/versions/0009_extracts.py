"""record-level extracts: k on export grants, and the record of every extract

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("k_anonymity", sa.Integer(), nullable=True))
    op.create_table(
        "extract_record",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("principal_id", sa.String(length=128), nullable=False),
        sa.Column("organisation", sa.String(length=128), nullable=False),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=128), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("generalisations", sa.Text(), nullable=False),
        sa.Column("k_anonymity", sa.Integer(), nullable=False),
        sa.Column("l_diversity", sa.String(length=160), nullable=True),
        sa.Column("records_suppressed", sa.BigInteger(), nullable=False),
        sa.Column("records_planned", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("records_released", sa.BigInteger(), nullable=True),
        sa.Column("response_digest", sa.String(length=64), nullable=True),
        sa.Column("fingerprints", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_extract_record")),
    )
    op.create_index(op.f("ix_extract_record_principal_id"), "extract_record", ["principal_id"], unique=False)
    op.create_index(op.f("ix_extract_record_dataset"), "extract_record", ["dataset"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_extract_record_dataset"), table_name="extract_record")
    op.drop_index(op.f("ix_extract_record_principal_id"), table_name="extract_record")
    op.drop_table("extract_record")
    with op.batch_alter_table("grant", schema=None) as batch_op:
        batch_op.drop_column("k_anonymity")
