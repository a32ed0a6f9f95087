"""Release 2: rename users.name to display_name; add users.email_domain.

Revision ID: r2_expand01
"""
import sqlalchemy as sa

from data_migrations import users_display_name, users_email_domain
from manage.ops import add_column, sync_columns

revision = "r2_expand01"
down_revision = "r1_expand01"
branch_labels = None
depends_on = None


def upgrade():
    add_column("users", sa.Column("display_name", sa.String(255),
                                  nullable=True))
    add_column("users", sa.Column("email_domain", sa.String(255),
                                  nullable=True))
    # Both syncs of users in one trigger per event: one trigger's cost.
    sync_columns(users_display_name.SYNC, users_email_domain.SYNC)
