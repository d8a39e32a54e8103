"""latency conditions: whether the machine was busy while a measurement ran (load average per core), and the teacher's
p50 from the same interleaved rounds

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("latency_measurements") as b:
        b.add_column(sa.Column("load", sa.Float, nullable=True))
        b.add_column(sa.Column("busy", sa.Boolean, nullable=True))
        b.add_column(sa.Column("reference_p50_ms", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("latency_measurements") as b:
        b.drop_column("reference_p50_ms")
        b.drop_column("busy")
        b.drop_column("load")
