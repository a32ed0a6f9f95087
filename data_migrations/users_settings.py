"""Release 3: the JSON text column users.settings becomes real columns.

``settings`` held ``{"theme": ..., "language": ...}``; the new columns are
``theme`` and ``language``.  Writing the columns updates the two keys in the
document and keeps any others.  Agreement is judged from the old side: the
values extracted from the document must equal the columns.
"""

from manage.datamigration import SyncBackfill
from manage.ops import declare_sync

SYNC = declare_sync(
    "users", old="settings", new=["theme", "language"],
    old_to_new={
        "theme": {
            "sqlite": "json_extract({settings}, '$.theme')",
            "mysql": "json_value({settings}, '$.theme')",
            "postgresql": "(({settings})::jsonb ->> 'theme')",
        },
        "language": {
            "sqlite": "json_extract({settings}, '$.language')",
            "mysql": "json_value({settings}, '$.language')",
            "postgresql": "(({settings})::jsonb ->> 'language')",
        },
    },
    new_to_old={
        "sqlite": "json_set(coalesce({settings}, '{{}}'), "
                  "'$.theme', {theme}, '$.language', {language})",
        "mysql": "json_set(coalesce({settings}, '{{}}'), "
                 "'$.theme', {theme}, '$.language', {language})",
        "postgresql": "(coalesce({settings}, '{{}}')::jsonb || "
                      "jsonb_build_object('theme', {theme}, "
                      "'language', {language}))::text",
    },
    check="old_to_new",
)


class SplitSettings(SyncBackfill):
    name = "users_settings_columns"
    description = "move users.settings JSON into users.theme/language"
    after_revision = "r3_expand02"
    sync = SYNC
