"""Release 2: a new column users.email_domain, derived from users.email.

Old code does not know the column; the sync's way back (``new_to_old``)
leaves the email as it is, and agreement is judged from the old side.
"""

from manage.datamigration import SyncBackfill
from manage.ops import declare_sync

SYNC = declare_sync(
    "users", old="email", new="email_domain",
    old_to_new={
        "sqlite": "lower(substr({email}, instr({email}, '@') + 1))",
        "mysql": "lower(substring_index({email}, '@', -1))",
        "postgresql": "lower(split_part({email}, '@', 2))",
    },
    new_to_old="{email}",
    check="old_to_new",
)


class BackfillEmailDomain(SyncBackfill):
    name = "users_email_domain"
    description = "fill users.email_domain from users.email"
    after_revision = "r2_expand01"
    sync = SYNC
