"""Release 3: the flag projects.is_public becomes projects.visibility.

The mapping is lossy one way: visibility has more states (public, private,
shared) than the flag.  From the flag: true is 'public', false 'private'.
To the flag: only 'public' is true.  Agreement is judged from the new side,
so a 'shared' project whose flag is false is consistent and stays 'shared'.
"""

from manage.datamigration import SyncBackfill
from manage.ops import declare_sync

SYNC = declare_sync(
    "projects", old="is_public", new="visibility",
    old_to_new="CASE WHEN {is_public} THEN 'public' ELSE 'private' END",
    new_to_old={
        "postgresql": "({visibility} = 'public')",
        "default": "CASE WHEN {visibility} = 'public' THEN 1 ELSE 0 END",
    },
)


class FlagToVisibility(SyncBackfill):
    name = "projects_visibility"
    description = "set projects.visibility from projects.is_public"
    after_revision = "r3_expand01"
    sync = SYNC
