"""nodes and proxy config

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "node",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("base_url", sa.String(length=500), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("base_url"),
        sa.UniqueConstraint("name"),
        # Never reuse a deleted node's id: shared counters and statuses are keyed by it.
        sqlite_autoincrement=True,
    )
    op.create_table(
        "proxy_config",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("health_interval", sa.Float(), nullable=False),
        sa.Column("standby_interval", sa.Float(), nullable=False),
        sa.Column("probe_timeout", sa.Float(), nullable=False),
        sa.Column("connect_timeout", sa.Float(), nullable=False),
        sa.Column("first_byte_timeout", sa.Float(), nullable=False),
        sa.Column("max_tries", sa.Integer(), nullable=False),
        sa.Column("models_max_age", sa.Float(), nullable=False),
        sa.Column("forward_authorization", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade():
    op.drop_table("proxy_config")
    op.drop_table("node")
