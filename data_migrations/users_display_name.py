"""Release 2: users.name is renamed to users.display_name."""

from manage.datamigration import SyncBackfill
from manage.ops import declare_sync

SYNC = declare_sync("users", old="name", new="display_name")


class CopyDisplayName(SyncBackfill):
    name = "users_display_name"
    description = "copy users.name into users.display_name"
    after_revision = "r2_expand01"
    sync = SYNC
