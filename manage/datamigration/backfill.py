"""Declarative data migrations: a few lines instead of a plugin's code.

:class:`Backfill` sets columns of the rows that need it::

    class BackfillEmailDomain(Backfill):
        name = "users_email_domain"
        table = "users"
        values = {"email_domain": "lower(substr({email}, 2))"}
        where = "email_domain IS NULL"

:class:`SyncBackfill` derives both from a column sync declared with
:func:`manage.ops.declare_sync`, so the expand revision and the data
migration share one declaration.
"""

import sqlalchemy as sa

from manage.column_sync import render
from manage.datamigration.base import DataMigration
from manage.dialects import get as get_dialect


class Backfill(DataMigration):
    """Set ``values`` on the rows of ``table`` matching ``where``.

    Expressions use ``{column}`` references and may be per-dialect dicts, as
    in :func:`manage.ops.sync_columns`.  ``where`` must stop matching a row
    once it is migrated: that is what makes the migration restartable.
    """

    table = None
    key = "id"
    values = {}
    where = None

    def _sql(self, connection, expression):
        quote = connection.dialect.identifier_preparer.quote
        return render(expression, connection.dialect.name, quote)

    def where_sql(self, connection):
        return self._sql(connection, self.where)

    def pending(self, connection):
        quote = connection.dialect.identifier_preparer.quote
        return connection.execute(sa.text(
            "SELECT count(*) FROM %s WHERE %s" % (
                quote(self.table), self.where_sql(connection)))).scalar()

    def migrate(self, connection, limit):
        quote = connection.dialect.identifier_preparer.quote
        table, key = quote(self.table), quote(self.key)
        where = self.where_sql(connection)
        keys = [row[0] for row in connection.execute(sa.text(
            "SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT %d" % (
                key, table, where, key, int(limit))))]
        if not keys:
            return 0
        assignments = ", ".join(
            "%s = (%s)" % (quote(column), self._sql(connection, expression))
            for column, expression in self.values.items())
        statement = sa.text(
            "UPDATE %s SET %s WHERE %s IN :keys AND (%s)" % (
                table, assignments, key, where)
        ).bindparams(sa.bindparam("keys", expanding=True))
        return connection.execute(statement, {"keys": keys}).rowcount


class SyncBackfill(Backfill):
    """Fill the new columns of a column sync for rows written before it.

    Rows written after expand are kept in sync by the triggers; this moves
    the rows that existed before.  Which rows need it follows the sync's
    check direction: with ``new_to_old`` the rows whose old side is set and
    whose new side is still empty (an existing new value is never
    overwritten); with ``old_to_new`` every row whose new columns do not
    equal their value computed from the old side.
    """

    sync = None

    @property
    def table(self):
        return self.sync.table

    @property
    def values(self):
        return dict(self.sync.old_to_new)

    def where_sql(self, connection):
        quote = connection.dialect.identifier_preparer.quote
        dialect = connection.dialect.name
        sync = self.sync
        if sync.check == "new_to_old":
            old_given = " OR ".join("%s IS NOT NULL" % quote(c)
                                    for c in sync.old)
            new_empty = " AND ".join("%s IS NULL" % quote(c)
                                     for c in sync.new)
            return "(%s) AND %s" % (old_given, new_empty)
        same = get_dialect(dialect).null_safe_equal
        return "NOT (%s)" % " AND ".join(
            same(sync.expression("old_to_new", c, dialect, quote), quote(c))
            for c in sync.new)
