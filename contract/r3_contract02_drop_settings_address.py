"""Release 3: drop users.settings (and its sync) and users.address.

Revision ID: r3_contract02
"""
from alembic import op

from data_migrations import users_settings
from manage.ops import drop_column_sync

revision = "r3_contract02"
down_revision = "r3_contract01"
branch_labels = None
depends_on = "r3_expand02"


def upgrade():
    drop_column_sync(users_settings.SYNC)
    op.drop_column("users", "settings")
    op.drop_column("users", "address")
