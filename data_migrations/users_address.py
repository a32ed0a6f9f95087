"""Release 3: users.address moves into its own table, user_addresses.

A plugin written by hand: it inserts the missing user_addresses rows for
users that have an address.  New code writes both places during the
transition; contract counts again before it drops users.address, so an
address written by old code after this ran is never lost.
"""

import sqlalchemy as sa

from manage.datamigration import DataMigration

users = sa.table("users", sa.column("id"), sa.column("address"))
addresses = sa.table("user_addresses", sa.column("user_id"),
                     sa.column("address"))


def _missing():
    return (sa.select(users.c.id, users.c.address)
            .where(users.c.address.is_not(None))
            .where(~sa.exists().where(addresses.c.user_id == users.c.id)))


class MoveAddress(DataMigration):
    name = "users_address_table"
    description = "copy users.address into the user_addresses table"
    after_revision = "r3_expand02"

    def pending(self, connection):
        return connection.execute(
            sa.select(sa.func.count()).select_from(_missing().subquery())
        ).scalar()

    def migrate(self, connection, limit):
        rows = connection.execute(
            _missing().order_by(users.c.id).limit(limit)).fetchall()
        if rows:
            connection.execute(addresses.insert(), [
                {"user_id": r.id, "address": r.address} for r in rows])
        return len(rows)
