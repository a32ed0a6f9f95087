"""Release 3: users.settings JSON into columns; users.address to a table.

Revision ID: r3_expand02
"""
import sqlalchemy as sa

from data_migrations import users_address, users_settings
from manage.ops import (add_column, copy_column_to_table, create_table,
                        sync_columns)

revision = "r3_expand02"
down_revision = "r3_expand01"
branch_labels = None
depends_on = None


def upgrade():
    add_column("users", sa.Column("theme", sa.String(32), nullable=True))
    add_column("users", sa.Column("language", sa.String(16),
                                  nullable=True))
    sync_columns(users_settings.SYNC)
    create_table(
        "user_addresses",
        sa.Column("id", sa.Integer, primary_key=True),
        # CASCADE: old code, which does not know this table, may still
        # delete users.
        sa.Column("user_id", sa.Integer,
                  sa.ForeignKey("users.id", ondelete="CASCADE"),
                  nullable=False, unique=True),
        sa.Column("address", sa.String(255), nullable=False),
    )
    copy_column_to_table(users_address.COPY)
