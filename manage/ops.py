"""Public helpers for migration scripts.

Revision files import these (and Alembic's ``op``), never the CLI::

    from manage.ops import sync_columns, drop_column_sync

    def upgrade():                       # expand revision
        op.add_column("users", sa.Column("display_name", sa.String(255)))
        sync_columns("users", old="name", new="display_name")

    def upgrade():                       # the matching contract revision
        drop_column_sync("users", old="name", new="display_name")
        op.drop_column("users", "name")

``add_column``, ``create_table``, ``create_index``, ``drop_column``,
``drop_index`` and ``drop_table`` work like Alembic's ``op`` functions but can
be run again after a crash (see the end of this module).
"""

import sqlalchemy as sa
from alembic import op

from manage import (column_sync, dialects, run_context, shapes,
                    sync_registry, table_shape)
from manage.exceptions import ManageError


def declare_sync(table, old, new, old_to_new=None, new_to_old=None,
                 check="new_to_old", reject=("disagreement",)):
    """Declare a column sync without creating it (arguments as below).

    Share the declaration between the expand revision (``sync_columns``)
    and the data migration (:class:`manage.datamigration.SyncBackfill`).

    :param reject: the conflict rules, one or several of
        ``"disagreement"`` (always on: a write that sets both sides to
        values that do not agree is rejected), ``"both_sides"`` (any write
        that sets both sides is rejected) and ``"null"`` (a write that
        leaves a synced column NULL is rejected).
    """
    return column_sync.declare(table, old, new, old_to_new, new_to_old,
                               check, reject)


def sync_columns(table, old=None, new=None, old_to_new=None, new_to_old=None,
                 check="new_to_old", *more):
    """Keep old and new columns in sync both ways while old and new code run.

    On insert, whichever side the writer gave fills the other; on update, a
    change to one side is carried to the other; a write that sets both sides
    to values that do not agree is rejected.

    :param table: the table name, or declarations from
        :func:`declare_sync` given as positional arguments, several syncs
        of one table sharing one trigger per event (about the write cost of
        one sync): ``sync_columns(RENAME, DERIVED)``.
    :param old: the old column, or a list of old columns.
    :param new: the new column, or a list of new columns.
    :param old_to_new: SQL computing the new column from the old side, with
        column references in braces: ``"CASE WHEN {is_public} = 1 THEN
        'public' ELSE 'private' END"``.  For several new columns, a dict of
        column to expression.  Any expression may be a dict of dialect name
        (``sqlite``, ``mysql``, ``postgresql``, ``default``) to SQL.  Default:
        the old column unchanged.
    :param new_to_old: the same, from the new side to the old columns.
    :param check: which direction decides whether both sides agree:
        ``"new_to_old"`` (default; compares each old column with its value
        computed from the new side, right when the new side holds more
        information) or ``"old_to_new"`` (when the old side holds more, as a
        JSON document split into columns).

    During ``manage db sync`` (offline) no triggers are created.  Creating a
    sync that already exists replaces it, so a re-run after a failure is
    safe.  Returns the :class:`~manage.column_sync.SyncGroup`.
    """
    group = column_sync.as_group(_declarations(
        table, old, new, old_to_new, new_to_old, check, more))
    if not run_context.current(op.get_context().config).online:
        return group
    support = dialects.get(op.get_context().dialect.name)
    shapes.check_sync(op.get_context(), group)  # refuse before any change
    shape = _shape(group.table)
    if shape is not None:
        support.check_foreign_triggers(op.get_bind(), group)
    drop = support.drop_sync_sql(group.table, group.name)
    for statement in drop:
        op.execute(statement)
    create = support.create_sync_sql(group, shape)
    for statement in create:
        op.execute(statement)
    if shape is not None:  # recorded for manage.verify; not with --sql
        sync_registry.record(op.get_bind(), support, sync_registry.SYNC,
                             group.name, group.syncs, create, drop)
    return group


def drop_column_sync(table, old=None, new=None, *more):
    """Remove the sync that :func:`sync_columns` declared (contract step).

    Takes the table and columns, or the same declarations that were given
    to :func:`sync_columns`.  Harmless when the triggers are absent (an
    offline sync never made them).
    """
    if isinstance(table, column_sync.ColumnSync):
        group = column_sync.as_group(_declarations(
            table, old, new, None, None, "new_to_old", more))
        _drop_triggers(group.table, group.name)
        return
    _drop_triggers(table,
                   column_sync.sync_name(table, _columns(old), _columns(new)))


def _declarations(table, old, new, old_to_new, new_to_old, check, more):
    """The syncs a call names: declarations, or one table's columns."""
    if not isinstance(table, column_sync.ColumnSync):
        return [declare_sync(table, old, new, old_to_new, new_to_old, check)]
    rest = [v for v in (old, new, old_to_new, new_to_old) if v is not None]
    if check != "new_to_old":
        rest.append(check)
    rest += list(more)
    if not all(isinstance(v, column_sync.ColumnSync) for v in rest):
        raise column_sync.ColumnSyncError(
            "give either declarations from declare_sync() or a table and its "
            "columns, not both")
    return [table] + rest


def declare_copy(table, column, target, target_key, key="id",
                 target_column=None):
    """Declare that ``table.column`` moves to ``target`` (see below)."""
    return column_sync.declare_copy(table, column, target, target_key, key,
                                    target_column)


def copy_column_to_table(copy):
    """Carry every write of a column that moves to another table (expand).

    ``copy`` comes from :func:`declare_copy`.  Both ways: each insert or
    update of ``table.column`` by old code upserts the row of ``target``
    whose ``target_key`` equals the row's ``key`` (setting the column to
    NULL deletes that row), and each insert, update or delete of a
    ``target`` row by new code sets ``table.column`` (NULL when deleted).
    So new code writes the new place only, and keeps working when contract
    drops the old column.  ``target_key`` must be unique.  Each side writes
    the other only where it differs, so a write's chain of triggers ends at
    once.  No triggers during ``sync``.
    """
    context = op.get_context()
    if not run_context.current(context.config).online:
        return copy
    support = dialects.get(context.dialect.name)
    shapes.check_copy(context, copy)  # refuse before any change
    shape = _shape(copy.table)
    drop = support.drop_copy_sql(copy)
    for statement in drop:
        op.execute(statement)
    create = support.create_copy_sql(copy, shape)
    for statement in create:
        op.execute(statement)
    if shape is not None:  # recorded for manage.verify; not with --sql
        sync_registry.record(op.get_bind(), support, sync_registry.COPY,
                             copy.name, [copy], create, drop)
    return copy


def drop_column_copy(copy):
    """Remove what :func:`copy_column_to_table` made (contract step)."""
    support = dialects.get(op.get_context().dialect.name)
    _drop_triggers(copy.table, copy.name, support.drop_copy_sql(copy))


def _shape(table):
    """The table's reflected shape (None when generating SQL offline)."""
    if op.get_context().as_sql:
        return None
    bind = op.get_bind()
    support = dialects.get(op.get_context().dialect.name)
    support.prepare_data_session(bind)
    return table_shape.reflect(bind, table)


def _drop_triggers(table, name, statements=None):
    context = op.get_context()
    support = dialects.get(context.dialect.name)
    if not context.as_sql:
        # Forget the record first: on MySQL the DROP commits it with it.
        sync_registry.remove(op.get_bind(), name)
        # Only touch triggers that exist: on MySQL with binary logging even
        # DROP TRIGGER IF EXISTS needs SUPER, which an offline sync that
        # never made triggers should not require.
        present = set(support.list_sync_triggers(op.get_bind()))
        if not present & set(support.trigger_names(name)):
            return
    if statements is None:
        statements = support.drop_sync_sql(table, name)
    for statement in statements:
        op.execute(statement)


def _columns(value):
    return (value,) if isinstance(value, str) else tuple(value)


# -- idempotent schema operations --------------------------------------------
# MySQL DDL is not transactional: a revision killed half-way leaves what it
# already did.  Run again, these helpers skip what is already there exactly
# as intended and refuse, naming the difference, what is there otherwise.
# In offline (--sql) mode they emit their statement unconditionally.

class SchemaConflictError(ManageError):
    """An object a revision creates exists, but not as the revision says."""


def add_column(table, column, **kw):
    """``op.add_column`` that tolerates the column already added."""
    existing = _columns_of(table)
    if existing is not None and column.name in existing:
        _require_same(table, existing[column.name], column)
        return
    op.add_column(table, column, **kw)


def create_table(name, *elements, **kw):
    """``op.create_table`` that tolerates the table already created with
    the same columns (names, types, nullability) and primary key."""
    existing = _columns_of(name)
    if not existing:
        return op.create_table(name, *elements, **kw)
    columns = [e for e in elements if isinstance(e, sa.Column)]
    names = [c.name for c in columns]
    if set(names) != set(existing):
        raise SchemaConflictError(
            "table %s exists with columns (%s), not the intended (%s); "
            "resolve the difference by hand, then run the command again"
            % (name, ", ".join(existing), ", ".join(names)))
    for column in columns:
        _require_same(name, existing[column.name], column)
    pk = sa.inspect(op.get_bind()).get_pk_constraint(name)
    intended = [c.name for c in columns if c.primary_key]
    if sorted(pk["constrained_columns"]) != sorted(intended):
        raise SchemaConflictError(
            "table %s exists with primary key (%s), not the intended (%s)"
            % (name, ", ".join(pk["constrained_columns"]),
               ", ".join(intended)))
    return None


def create_index(name, table, columns, unique=False, **kw):
    """``op.create_index`` that tolerates the index already created."""
    if not op.get_context().as_sql:
        found = {i["name"]: i for i in
                 sa.inspect(op.get_bind()).get_indexes(table)}
        if name in found:
            have = found[name]
            if list(have["column_names"]) != list(columns) or \
                    bool(have["unique"]) != bool(unique):
                raise SchemaConflictError(
                    "index %s on %s exists on (%s)%s, not on (%s)%s as "
                    "intended" % (name, table, ", ".join(
                        have["column_names"]), " unique" if have["unique"]
                        else "", ", ".join(columns),
                        " unique" if unique else ""))
            return
    op.create_index(name, table, columns, unique=unique, **kw)


def drop_column(table, column, **kw):
    """``op.drop_column`` that tolerates the column already dropped."""
    existing = _columns_of(table)
    if existing is None or column in existing:
        op.drop_column(table, column, **kw)


def drop_index(name, table, **kw):
    """``op.drop_index`` that tolerates the index already dropped."""
    if op.get_context().as_sql or name in {
            i["name"] for i in sa.inspect(op.get_bind()).get_indexes(table)}:
        op.drop_index(name, table_name=table, **kw)


def drop_table(name, **kw):
    """``op.drop_table`` that tolerates the table already dropped."""
    if op.get_context().as_sql or _has_table(name):
        op.drop_table(name, **kw)


def _has_table(name):
    return sa.inspect(op.get_bind()).has_table(name)


def _columns_of(table):
    """Reflected columns by name ({} if no table), None when offline."""
    if op.get_context().as_sql:
        return None
    if not _has_table(table):
        return {}
    return {c["name"]: sa.Column(c["name"], c["type"],
                                 nullable=c["nullable"])
            for c in sa.inspect(op.get_bind()).get_columns(table)}


def _require_same(table, have, want):
    context = op.get_context()
    problems = []
    if context.impl.compare_type(have, want):
        problems.append("type %s, not %s" % (
            have.type.compile(context.dialect),
            want.type.compile(context.dialect)))
    if bool(have.nullable) != bool(want.nullable):
        problems.append("NULL" if have.nullable else "NOT NULL")
    if problems:
        raise SchemaConflictError(
            "column %s.%s exists, but with %s: it was not made by this "
            "revision; resolve the difference by hand, then run the command "
            "again" % (table, want.name, " and ".join(problems)))
