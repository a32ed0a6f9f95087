"""Release 3: drop users.settings (and its sync) and users.address.

Revision ID: r3_contract02
"""
from data_migrations import users_address, users_settings
from manage.ops import drop_column, drop_column_copy, drop_column_sync

revision = "r3_contract02"
down_revision = "r3_contract01"
branch_labels = None
depends_on = "r3_expand02"


def upgrade():
    drop_column_sync(users_settings.SYNC)
    drop_column_copy(users_address.COPY)
    drop_column("users", "settings")
    drop_column("users", "address")
