"""The batched backfill engine: walk a table by a unique key.

:class:`KeysetMigration` is the engine.  It walks a table by a unique key:
by default its whole primary key, reflected (one column or several, of any
type the engines order: integers, text, UUIDs, binary, dates...).  A key
given by the plugin that is not unique is extended with the remaining
primary key columns.  A pass takes a high-water mark (the largest key, by
``ORDER BY key DESC LIMIT 1``: no ``max()``, which some types lack) when it
starts and walks the keys up to it in key order, at most ``limit`` keys per
batch (keyset pagination: every batch starts where the last one stopped,
through the index).  A batch's upper bound is the ``limit``-th key after
the last one done (``ORDER BY key LIMIT 1 OFFSET limit - 1``); only the
last, short batch of a pass counts its rows.  Rows written after the pass
started lie above the mark and are kept in sync by the triggers, so a pass
ends even under heavy inserts.

The cursor ``{"after": last key done, "until": high-water mark}`` is saved
as JSON by the runner with every batch; a killed run resumes from it.  A key
of one column is saved as its value, a key of several as a list (with
``"key"``, the column names); values JSON has no type for are tagged
(``{"uuid": ...}``, ``{"decimal": ...}``, ``{"datetime": ...}``,
``{"date": ...}``, ``{"time": ...}``, ``{"bytes": base64}``...) and decoded
back to the same Python value.

:class:`Backfill` sets columns of the rows that need it in a few
declarative lines::

    class BackfillEmailDomain(Backfill):
        name = "users_email_domain"
        table = "users"
        values = {"email_domain": "lower(substr({email}, 2))"}
        where = "email_domain IS NULL"

:class:`SyncBackfill` derives both from a column sync declared with
:func:`manage.ops.declare_sync`, and :class:`CopyBackfill` fills the target
table of a column copy declared with :func:`manage.ops.declare_copy`, so the
expand revision and the data migration share one declaration.  A custom
plugin subclasses :class:`KeysetMigration` and implements
:meth:`~KeysetMigration.migrate_range`.
"""

import base64
import datetime
import decimal
import uuid
from typing import Any, Dict, Optional, Tuple

import sqlalchemy as sa

from manage import table_shape
from manage.column_sync import render
from manage.datamigration.base import Batch, DataMigration
from manage.dialects import get as get_dialect
from manage.exceptions import ShapeError

#: A bound of a key range as the plugin hooks see it: the value itself for
#: a key of one column, a tuple of values for a key of several (a shorter
#: tuple bounds the leading columns only).
Bound = Any


# -- key values in a JSON cursor ---------------------------------------------
_TAGS = {
    "uuid": (uuid.UUID, str, uuid.UUID),
    "decimal": (decimal.Decimal, str, decimal.Decimal),
    "datetime": (datetime.datetime, datetime.datetime.isoformat,
                 datetime.datetime.fromisoformat),
    "date": (datetime.date, datetime.date.isoformat,
             datetime.date.fromisoformat),
    "time": (datetime.time, datetime.time.isoformat,
             datetime.time.fromisoformat),
    "timedelta": (datetime.timedelta,
                  lambda v: [v.days, v.seconds, v.microseconds],
                  lambda v: datetime.timedelta(*v)),
    "bytes": ((bytes, bytearray, memoryview),
              lambda v: base64.b64encode(bytes(v)).decode("ascii"),
              base64.b64decode),
}


def encode_key_value(value: Any) -> Any:
    """A key value as JSON data, losslessly (see :func:`decode_key_value`).

    ``None``, booleans, integers, floats and text are themselves; a UUID,
    Decimal, datetime, date, time, timedelta or bytes value becomes a
    one-entry object naming its type.  Raises :class:`ShapeError` for
    another type.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    # datetime before date: a datetime is a date.
    for tag in ("uuid", "decimal", "datetime", "date", "time", "timedelta",
                "bytes"):
        kind, dump, _ = _TAGS[tag]
        if isinstance(value, kind):
            return {tag: dump(value)}
    raise ShapeError("a key value of type %s cannot be saved in a cursor"
                     % type(value).__name__)


def decode_key_value(data: Any) -> Any:
    """The key value :func:`encode_key_value` encoded as ``data``."""
    if isinstance(data, dict) and len(data) == 1:
        (tag, text), = data.items()
        if tag in _TAGS:
            return _TAGS[tag][2](text)
    return data


def walk_key(connection, table: str, key=None) -> Tuple[str, ...]:
    """The columns a keyset walk of ``table`` orders by: a unique key.

    ``key`` None: the primary key, or else the unique key of NOT NULL
    columns with the fewest columns.  ``key`` given (a column or a
    sequence): itself when it holds a unique key, else extended with the
    primary key columns it lacks.  Raises :class:`ShapeError` when the
    table has no such key.
    """
    inspector = sa.inspect(connection)
    if not inspector.has_table(table):
        raise ShapeError("table %s does not exist" % table)
    columns = {c["name"]: c for c in inspector.get_columns(table)}
    primary = tuple(inspector.get_pk_constraint(table)
                    .get("constrained_columns") or ())
    uniques = [primary] if primary else []
    candidates = [u["column_names"] for u in
                  inspector.get_unique_constraints(table)]
    candidates += [i["column_names"] for i in inspector.get_indexes(table)
                   if i.get("unique")]
    for names in candidates:
        names = tuple(names or ())
        if names and all(n in columns and not columns[n].get("nullable", True)
                         for n in names):
            uniques.append(names)
    if key is None:
        if not uniques:
            raise ShapeError(
                "table %s has no primary key and no unique key of NOT NULL "
                "columns: a data migration cannot walk it by key" % table)
        return primary or min(uniques, key=len)
    given = (key,) if isinstance(key, str) else tuple(key)
    unknown = [c for c in given if c not in columns]
    if unknown:
        raise ShapeError("key column(s) %s of the walk are not columns of "
                         "table %s" % (", ".join(unknown), table))
    if any(set(u) <= set(given) for u in uniques):
        return given
    if primary:
        return given + tuple(c for c in primary if c not in given)
    for unique in sorted(uniques, key=len):
        return given + tuple(c for c in unique if c not in given)
    raise ShapeError(
        "key %s of table %s is not unique and the table has no primary key "
        "or unique key of NOT NULL columns to complete it" % (
            ", ".join(given), table))


def _as_tuple(bound) -> Optional[tuple]:
    if bound is None:
        return None
    return tuple(bound) if isinstance(bound, (list, tuple)) else (bound,)


def _beyond(columns, names, strict, last):
    """Expanded row comparison ``(a, b) OP (:a, :b)`` that indexes can use:
    ``a >= :a AND (a > :a OR (a = :a AND b > :b))``."""
    expr = "%s %s :%s" % (columns[-1], last, names[-1])
    for column, name in reversed(list(zip(columns[:-1], names[:-1]))):
        expr = "%s %s :%s OR (%s = :%s AND (%s))" % (
            column, strict, name, column, name, expr)
    if len(columns) > 1:
        expr = "%s %s= :%s AND (%s)" % (columns[0], strict, names[0], expr)
    return "(%s)" % expr


class KeysetMigration(DataMigration):
    """Walk ``table`` by a unique key, a bounded range of keys per batch.

    ``key``: None (the default) walks by the table's primary key; a column
    name or a tuple of names is used when unique and otherwise extended
    with the remaining primary key columns (see :func:`walk_key`).

    Subclasses give :meth:`where_sql`, the condition of the rows that still
    need work (it must stop matching a row once the row is migrated: that
    makes batches idempotent and the count in :meth:`pending` exact), and
    :meth:`migrate_range`, which moves the rows of a key range.  Bounds are
    passed as :data:`Bound` values: a value for a one-column key, a tuple
    for a key of several columns.
    """

    table = None
    key = None
    #: SQL condition of the rows that need work; see :meth:`where_sql`.
    where = None

    def _sql(self, connection, expression):
        quote = connection.dialect.identifier_preparer.quote
        return render(expression, connection.dialect.name, quote)

    def where_sql(self, connection):
        """The condition of rows needing work, with ``{column}`` rendered."""
        return self._sql(connection, self.where)

    def migrate_range(self, connection, after: Bound, upper: Bound) -> int:
        """Move the rows needing work with ``after < key <= upper``
        (``after`` None: no lower bound); return how many were moved."""
        raise NotImplementedError

    # -- the key -------------------------------------------------------------
    def key_columns(self, connection) -> Tuple[str, ...]:
        """The columns of the walk (reflected once per engine)."""
        cache = self.__dict__.setdefault("_manage_keys", {})
        slot = (id(connection.engine), self.table)
        if slot not in cache:
            cache[slot] = walk_key(connection, self.table, self.key)
        return cache[slot]

    def _table_shape(self, connection, table):
        """The reflected TableShape of ``table`` (once per engine)."""
        cache = self.__dict__.setdefault("_manage_shapes", {})
        slot = (id(connection.engine), table)
        if slot not in cache:
            cache[slot] = table_shape.reflect(connection, table)
        return cache[slot]

    def _public(self, connection, bound):
        """A bound as the hooks take it (a value for a one-column key)."""
        if bound is None or len(self.key_columns(connection)) > 1:
            return bound
        return bound[0]

    # -- SQL building blocks ------------------------------------------------
    def _names(self, connection):
        quote = connection.dialect.identifier_preparer.quote
        return quote(self.table), [quote(c) for c in
                                   self.key_columns(connection)]

    def range_sql(self, connection, after: Bound,
                  upper: Bound) -> Tuple[str, Dict[str, Any]]:
        """``after < key <= upper`` as SQL text and its parameters
        (``after`` None: no lower bound; ``upper`` None: no upper bound).
        A bound shorter than the key bounds its leading columns."""
        _, key = self._names(connection)
        parts, params = [], {}
        for bound, prefix, strict, last in ((after, "manage_after", ">", ">"),
                                            (upper, "manage_upper", "<",
                                             "<=")):
            values = _as_tuple(bound)
            if values is None:
                continue
            names = ["%s_%d" % (prefix, i) for i in range(len(values))]
            parts.append(_beyond(key[:len(values)], names, strict, last))
            params.update(zip(names, values))
        return " AND ".join(parts) or "1 = 1", params

    def _order(self, connection, descending=False):
        _, key = self._names(connection)
        return ", ".join(c + (" DESC" if descending else "") for c in key)

    def _key_at(self, connection, condition, params, offset=0,
                descending=False) -> Optional[tuple]:
        """The key of the ``offset``-th row (from 0) matching ``condition``
        in key order (or reverse key order); None when there is none."""
        table, key = self._names(connection)
        row = connection.execute(sa.text(
            "SELECT %s FROM %s WHERE %s ORDER BY %s LIMIT 1 OFFSET %d" % (
                ", ".join(key), table, condition,
                self._order(connection, descending), int(offset))),
            params).first()
        self.check_warnings(connection, "reading %s" % self.table,
                            reading=True)
        return None if row is None else tuple(row)

    def _count(self, connection, condition, params):
        table, _ = self._names(connection)
        count = int(connection.execute(sa.text(
            "SELECT count(*) FROM %s WHERE %s" % (table, condition)),
            params).scalar() or 0)
        self.check_warnings(connection, "counting the rows of %s"
                            % self.table, reading=True)
        return count

    # -- the cursor ----------------------------------------------------------
    def _dump(self, connection, after, until):
        key = self.key_columns(connection)

        def encode(bound):
            if bound is None:
                return None
            values = [encode_key_value(v) for v in bound]
            return values if len(key) > 1 else values[0]
        cursor = {"after": encode(after), "until": encode(until)}
        if len(key) > 1:
            cursor["key"] = list(key)
        return cursor

    def _load(self, connection, cursor):
        """(after, until) tuples of a saved cursor; None when it belongs to
        another key (the pass starts again)."""
        saved = cursor.get("key")
        if saved is not None and tuple(saved) != self.key_columns(connection):
            return None

        def decode(data):
            if data is None:
                return None
            values = data if isinstance(data, list) else [data]
            return tuple(decode_key_value(v) for v in values)
        return decode(cursor.get("after")), decode(cursor.get("until"))

    # -- the plugin contract ------------------------------------------------
    def pending(self, connection):
        return self._count(connection, self.where_sql(connection), {})

    def migrate(self, connection, limit):
        """Without a cursor: the first ``limit`` rows needing work."""
        condition = "(%s)" % self.where_sql(connection)
        upper = self._key_at(connection, condition, {}, int(limit) - 1)
        if upper is None:
            upper = self._key_at(connection, condition, {}, descending=True)
        if upper is None:
            return 0
        return self.migrate_range(connection, None,
                                  self._public(connection, upper))

    def begin(self, connection, cursor):
        if isinstance(cursor, dict) and "until" in cursor:
            loaded = self._load(connection, cursor)
            if loaded is not None:
                return self._dump(connection, *loaded)  # resume the pass
        mark = self._key_at(connection, "1 = 1", {}, descending=True)
        return self._dump(connection, None, mark)

    def migrate_batch(self, connection, limit, cursor):
        loaded = self._load(connection, cursor)
        if loaded is None:  # saved for another key: begin() starts over
            loaded = self._load(connection, self.begin(connection, None))
        after, until = loaded
        if until is None:  # the table was empty when the pass started
            return Batch(0, 0, cursor, True)
        condition, params = self.range_sql(connection, after, until)
        upper = self._key_at(connection, condition, params, int(limit) - 1)
        scanned = int(limit)
        if upper is None:  # the last, short batch of the pass
            scanned = self._count(connection, condition, params)
            if not scanned:
                return Batch(0, 0, cursor, True)
            upper = until
        moved = int(self.migrate_range(
            connection, self._public(connection, after),
            self._public(connection, upper)) or 0)
        return Batch(moved, scanned, self._dump(connection, upper, until),
                     scanned < limit or upper == until)

    def check_warnings(self, connection, what, reading=False):
        """Fail the batch if the statement just run left warnings (values
        an expression could not convert; see DialectSupport).  For a query
        (``reading``), an unreadable value must not pass for NULL: a row
        whose old side cannot be read is neither done nor skipped.

        Raises :class:`~manage.exceptions.DataConversionError`."""
        get_dialect(connection.dialect.name).raise_for_warnings(
            connection, "data migration %s, %s" % (self.name, what),
            reading=reading)


class Backfill(KeysetMigration):
    """Set ``values`` on the rows of ``table`` matching ``where``.

    Expressions use ``{column}`` references and may be per-dialect dicts, as
    in :func:`manage.ops.sync_columns`.  ``where`` must stop matching a row
    once it is migrated: that is what makes the migration restartable.  An
    expression that cannot convert a value fails the batch (and the
    migration, by name) on every engine, instead of storing NULL.
    """

    values = {}

    def _assignments(self, connection):
        quote = connection.dialect.identifier_preparer.quote
        return ", ".join(
            "%s = (%s)" % (quote(column), self._sql(connection, expression))
            for column, expression in self.values.items())

    def migrate_range(self, connection, after, upper):
        table, _ = self._names(connection)
        condition, params = self.range_sql(connection, after, upper)
        moved = connection.execute(sa.text(
            "UPDATE %s SET %s WHERE %s AND (%s)" % (
                table, self._assignments(connection), condition,
                self.where_sql(connection))), params).rowcount
        self.check_warnings(connection, "updating %s" % self.table)
        return moved


class SyncBackfill(Backfill):
    """Fill the new columns of a column sync for rows written before it.

    Rows written after expand are kept in sync by the triggers; this moves
    the rows that existed before.  Which rows need it follows the sync's
    check direction: with ``new_to_old`` the rows whose old side is set and
    whose new side is still empty (an existing new value is never
    overwritten); with ``old_to_new`` every row whose two sides do not
    agree byte for byte (``DialectSupport.consistent_sql``); a row whose
    old side is all NULL gets an all-NULL new side.
    """

    sync = None

    @property
    def table(self):
        return self.sync.table

    @property
    def values(self):
        return dict(self.sync.old_to_new)

    def _assignments(self, connection):
        quote = connection.dialect.identifier_preparer.quote
        sync = self.sync
        if sync.check != "old_to_new":
            return super()._assignments(connection)
        old_null = " AND ".join("%s IS NULL" % quote(c) for c in sync.old)
        return ", ".join(
            "%s = CASE WHEN %s THEN NULL ELSE (%s) END" % (
                quote(column), old_null,
                sync.expression("old_to_new", column,
                                connection.dialect.name, quote))
            for column in sync.new)

    def where_sql(self, connection):
        quote = connection.dialect.identifier_preparer.quote
        sync = self.sync
        if sync.check == "new_to_old":
            old_given = " OR ".join("%s IS NOT NULL" % quote(c)
                                    for c in sync.old)
            new_empty = " AND ".join("%s IS NULL" % quote(c)
                                     for c in sync.new)
            return "(%s) AND %s" % (old_given, new_empty)
        support = get_dialect(connection.dialect.name)
        return "NOT (%s)" % support.consistent_sql(
            sync, quote, self._table_shape(connection, self.table))


class CopyBackfill(KeysetMigration):
    """Fill the target table of a column copy for rows written before it.

    ``copy`` is a :class:`manage.column_sync.ColumnCopy` from
    :func:`manage.ops.declare_copy`.  The copy's triggers carry every write
    made after expand; this walks the source table by the copy's ``key``
    and, for each row whose column is set but whose target row is missing
    or holds another value (byte for byte), does what the copy trigger does
    on a write of the column: it inserts the missing target row, or sets
    the target row's value to the source's.

    Races with the application are absorbed, not failed on: the batch first
    locks its source rows (``SELECT ... FOR UPDATE`` where the engine has
    row locks), so the values it copies are the current ones and a writer
    of the old column waits for the batch; the insert skips a target row a
    copy trigger inserted meanwhile (``DialectSupport.
    insert_ignore_duplicates_sql``).  Source rows whose column is NULL are
    left alone.
    """

    copy = None

    @property
    def table(self):
        return self.copy.table

    @property
    def key(self):
        return self.copy.key

    def _parts(self, connection):
        quote = connection.dialect.identifier_preparer.quote
        c = self.copy
        kind = self._table_shape(connection, c.table).kind(c.column)
        values = dict(table=quote(c.table), col=quote(c.column),
                      key=quote(c.key), target=quote(c.target),
                      tkey=quote(c.target_key), tcol=quote(c.target_column))
        same = get_dialect(connection.dialect.name).null_safe_equal(
            "{target}.{tcol}".format(**values),
            "{table}.{col}".format(**values), kind)
        values["same"] = same
        values["has_target"] = (
            "EXISTS (SELECT 1 FROM {target} WHERE {target}.{tkey} = "
            "{table}.{key})").format(**values)
        values["holds_value"] = (
            "EXISTS (SELECT 1 FROM {target} WHERE {target}.{tkey} = "
            "{table}.{key} AND {same})").format(**values)
        return values

    def where_sql(self, connection):
        return "{table}.{col} IS NOT NULL AND NOT {holds_value}".format(
            **self._parts(connection))

    def migrate_range(self, connection, after, upper):
        v = self._parts(connection)
        c = self.copy
        support = get_dialect(connection.dialect.name)
        condition, params = self.range_sql(connection, after, upper)
        needing = "%s AND %s" % (condition, self.where_sql(connection))
        # Lock the source rows first: a writer of the old column waits for
        # this batch, so the values copied below are the current ones.
        locked = len(connection.execute(
            sa.select(sa.literal_column(v["key"]))
            .select_from(sa.table(c.table))
            .where(sa.text(needing).bindparams(**params))
            .with_for_update()).all())
        if not locked:
            return 0
        # Missing target rows; one a copy trigger inserted meanwhile stays.
        moved = connection.execute(sa.text(
            support.insert_ignore_duplicates_sql(
                c.target, (c.target_key, c.target_column),
                "SELECT {table}.{key}, {table}.{col} FROM {table} WHERE "
                "{needing} AND NOT {has_target}".format(needing=needing, **v),
                (c.target_key,))), params).rowcount or 0
        self.check_warnings(connection, "inserting into %s" % c.target)
        # Target rows holding another value get the source's, as the copy
        # trigger would set them on a write of the column.
        moved += connection.execute(sa.text(
            "UPDATE {target} SET {tcol} = (SELECT {table}.{col} FROM {table} "
            "WHERE {table}.{key} = {target}.{tkey}) WHERE {target}.{tkey} IN "
            "(SELECT {table}.{key} FROM {table} WHERE {range} AND "
            "{table}.{col} IS NOT NULL) AND NOT EXISTS (SELECT 1 FROM "
            "{table} WHERE {table}.{key} = {target}.{tkey} AND {same})".format(
                range=condition, **v)), params).rowcount or 0
        self.check_warnings(connection, "updating %s" % c.target)
        return min(max(int(moved), 0), locked)
