"""trial compute: the device, precision and GPU name a trial trained with

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trials") as b:
        b.add_column(sa.Column("compute", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as b:
        b.drop_column("compute")
