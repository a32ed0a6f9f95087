"""Release 3: users.address moves into its own table, user_addresses.

After expand, triggers carry every write both ways (``COPY``): old code
writes users.address, new code writes user_addresses only.  This plugin
fills user_addresses for the rows from before expand, with the library's
:class:`~manage.datamigration.CopyBackfill` built from the same declaration:
it walks users by id, inserts the missing user_addresses rows (skipping one
a copy trigger inserts meanwhile) and corrects a row holding another value.
Contract verifies every row again before it drops users.address.
"""

from manage.datamigration import CopyBackfill
from manage.ops import declare_copy

COPY = declare_copy("users", "address", "user_addresses",
                    target_key="user_id")


class MoveAddress(CopyBackfill):
    name = "users_address_table"
    description = "copy users.address into the user_addresses table"
    after_revision = "r3_expand02"
    copy = COPY
