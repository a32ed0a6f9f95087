"""Release 3: the JSON text column users.settings becomes real columns.

``settings`` held ``{"theme": ..., "language": ...}``; the new columns are
``theme`` and ``language``.  Writing the columns updates the two keys in the
document and keeps any others.  Agreement is judged from the old side: the
values extracted from the document must equal the columns.
"""

from manage.datamigration import SyncBackfill
from manage.ops import declare_sync



def _mysql_value(key):
    """A key's value on MySQL/MariaDB: JSON_EXTRACT, not JSON_VALUE.

    MariaDB's JSON_VALUE returns NULL for malformed JSON without even a
    warning; JSON_EXTRACT fails (manage runs triggers and backfills in
    strict mode), as SQLite and PostgreSQL do.  A JSON null is SQL NULL, as
    on the others.
    """
    path = "json_extract({settings}, '$.%s')" % key
    return "CASE WHEN json_type(%s) = 'NULL' THEN NULL ELSE json_unquote(%s) " \
        "END" % (path, path)


SYNC = declare_sync(
    "users", old="settings", new=["theme", "language"],
    old_to_new={
        "theme": {
            "sqlite": "json_extract({settings}, '$.theme')",
            "mysql": _mysql_value("theme"),
            "postgresql": "(({settings})::jsonb ->> 'theme')",
        },
        "language": {
            "sqlite": "json_extract({settings}, '$.language')",
            "mysql": _mysql_value("language"),
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
