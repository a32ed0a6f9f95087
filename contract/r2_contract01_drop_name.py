"""Release 2: drop users.name and the release-2 column syncs.

Revision ID: r2_contract01
"""
from data_migrations import users_display_name, users_email_domain
from manage.ops import drop_column, drop_column_sync

revision = "r2_contract01"
down_revision = "r1_contract01"
branch_labels = None
depends_on = "r2_expand01"


def upgrade():
    drop_column_sync(users_display_name.SYNC, users_email_domain.SYNC)
    drop_column("users", "name")
