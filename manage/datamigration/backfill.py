"""The batched backfill engine: walk a table by its primary key.

:class:`KeysetMigration` is the engine.  A pass takes a high-water mark (the
largest key) when it starts and walks the keys up to it in key order, one
range of at most ``limit`` keys per batch (keyset pagination: every batch
starts where the last one stopped, found through the index, never with
OFFSET).  Rows written after the pass started lie above the mark and are
kept in sync by the triggers, so a pass ends even under heavy inserts.  The
cursor ``{"after": last key done, "until": high-water mark}`` is saved by
the runner with every batch; a killed run resumes from it.

:class:`Backfill` sets columns of the rows that need it in a few
declarative lines::

    class BackfillEmailDomain(Backfill):
        name = "users_email_domain"
        table = "users"
        values = {"email_domain": "lower(substr({email}, 2))"}
        where = "email_domain IS NULL"

:class:`SyncBackfill` derives both from a column sync declared with
:func:`manage.ops.declare_sync`, so the expand revision and the data
migration share one declaration.  A custom plugin (copying rows into another
table, rewriting JSON, ...) subclasses :class:`KeysetMigration` and
implements :meth:`~KeysetMigration.migrate_range`.
"""

import sqlalchemy as sa

from manage.column_sync import render
from manage.datamigration.base import Batch, DataMigration
from manage.dialects import get as get_dialect


class KeysetMigration(DataMigration):
    """Walk ``table`` by its single-column key ``key`` (integer or text).

    Subclasses give :meth:`where_sql`, the condition of the rows that still
    need work (it must stop matching a row once the row is migrated: that
    makes batches idempotent and the count in :meth:`pending` exact), and
    :meth:`migrate_range`, which moves the rows of a key range.
    """

    table = None
    key = "id"
    #: SQL condition of the rows that need work; see :meth:`where_sql`.
    where = None

    def _sql(self, connection, expression):
        quote = connection.dialect.identifier_preparer.quote
        return render(expression, connection.dialect.name, quote)

    def where_sql(self, connection):
        """The condition of rows needing work, with ``{column}`` rendered."""
        return self._sql(connection, self.where)

    def migrate_range(self, connection, after, upper):
        """Move the rows needing work with ``after < key <= upper``
        (``after`` None: no lower bound); return how many were moved."""
        raise NotImplementedError

    # -- SQL building blocks ------------------------------------------------
    def _names(self, connection):
        quote = connection.dialect.identifier_preparer.quote
        return quote(self.table), quote(self.key)

    def range_sql(self, connection, after, upper):
        """``key`` between the bounds, as SQL text and its parameters."""
        _, key = self._names(connection)
        parts, params = ["%s <= :upper" % key], {"upper": upper}
        if after is not None:
            parts.insert(0, "%s > :after" % key)
            params["after"] = after
        return " AND ".join(parts), params

    def _last_key(self, connection, condition, params, limit):
        """(largest key, number of keys) among the first ``limit`` keys
        matching ``condition``, in key order."""
        table, key = self._names(connection)
        return tuple(connection.execute(sa.text(
            "SELECT max(k), count(*) FROM (SELECT %s AS k FROM %s WHERE %s "
            "ORDER BY %s LIMIT %d) AS keyset" % (
                key, table, condition, key, int(limit))), params).one())

    # -- the plugin contract ------------------------------------------------
    def pending(self, connection):
        table, _ = self._names(connection)
        return connection.execute(sa.text(
            "SELECT count(*) FROM %s WHERE %s" % (
                table, self.where_sql(connection)))).scalar()

    def migrate(self, connection, limit):
        """Without a cursor: the first ``limit`` rows needing work."""
        upper, found = self._last_key(connection, self.where_sql(connection),
                                      {}, limit)
        return self.migrate_range(connection, None, upper) if found else 0

    def begin(self, connection, cursor):
        if cursor and "until" in cursor:
            return cursor  # resume the pass that was interrupted
        table, key = self._names(connection)
        mark = connection.execute(sa.text(
            "SELECT max(%s) FROM %s" % (key, table))).scalar()
        return {"after": None, "until": mark}

    def migrate_batch(self, connection, limit, cursor):
        after, until = cursor["after"], cursor["until"]
        if until is None:  # the table was empty when the pass started
            return Batch(0, 0, cursor, True)
        condition, params = self.range_sql(connection, after, until)
        upper, scanned = self._last_key(connection, condition, params, limit)
        if not scanned:
            return Batch(0, 0, cursor, True)
        moved = int(self.migrate_range(connection, after, upper) or 0)
        return Batch(moved, scanned, {"after": upper, "until": until},
                     scanned < limit or upper == until)


class Backfill(KeysetMigration):
    """Set ``values`` on the rows of ``table`` matching ``where``.

    Expressions use ``{column}`` references and may be per-dialect dicts, as
    in :func:`manage.ops.sync_columns`.  ``where`` must stop matching a row
    once it is migrated: that is what makes the migration restartable.
    """

    values = {}

    def migrate_range(self, connection, after, upper):
        quote = connection.dialect.identifier_preparer.quote
        table, _ = self._names(connection)
        condition, params = self.range_sql(connection, after, upper)
        assignments = ", ".join(
            "%s = (%s)" % (quote(column), self._sql(connection, expression))
            for column, expression in self.values.items())
        return connection.execute(sa.text(
            "UPDATE %s SET %s WHERE %s AND (%s)" % (
                table, assignments, condition, self.where_sql(connection))),
            params).rowcount


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
