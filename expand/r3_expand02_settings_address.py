"""Release 3: users.settings JSON into columns; users.address to a table.

Revision ID: r3_expand02
"""
import sqlalchemy as sa
from alembic import op

from data_migrations import users_settings
from manage.ops import sync_columns

revision = "r3_expand02"
down_revision = "r3_expand01"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("theme", sa.String(32), nullable=True))
    op.add_column("users", sa.Column("language", sa.String(16),
                                     nullable=True))
    sync_columns(users_settings.SYNC)
    op.create_table(
        "user_addresses",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"),
                  nullable=False, unique=True),
        sa.Column("address", sa.String(255), nullable=False),
    )
