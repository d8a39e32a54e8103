"""job service: who claimed a job, its heartbeat, a cancel request, and how often it was (re)claimed

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as b:
        b.add_column(sa.Column("claimed_by", sa.String(128)))
        b.add_column(sa.Column("heartbeat_at", sa.DateTime))
        b.add_column(sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()))
        b.add_column(sa.Column("claims", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as b:
        for c in ("claims", "cancel_requested", "heartbeat_at", "claimed_by"):
            b.drop_column(c)
