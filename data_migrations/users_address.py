"""Release 3: users.address moves into its own table, user_addresses.

After expand, triggers copy every write of users.address by old code to
user_addresses (``COPY``); new code writes both places until contract.  This
plugin, written by hand on the batched engine, moves the addresses of the
rows from before expand: it walks users by id and inserts the missing
user_addresses rows.  Contract counts again before it drops users.address.
"""

import sqlalchemy as sa

from manage.datamigration import KeysetMigration
from manage.ops import declare_copy

COPY = declare_copy("users", "address", "user_addresses",
                    target_key="user_id")


class MoveAddress(KeysetMigration):
    name = "users_address_table"
    description = "copy users.address into the user_addresses table"
    after_revision = "r3_expand02"
    table = "users"
    where = ("{address} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
             "{user_addresses} WHERE {user_addresses}.{user_id} = "
             "{users}.{id})")

    def migrate_range(self, connection, after, upper):
        condition, params = self.range_sql(connection, after, upper)
        return connection.execute(sa.text(
            "INSERT INTO user_addresses (user_id, address) "
            "SELECT id, address FROM users WHERE %s AND (%s)"
            % (condition, self.where_sql(connection))), params).rowcount
