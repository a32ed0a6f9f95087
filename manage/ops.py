"""Public helpers for migration scripts.

Revision files import these (and Alembic's ``op``), never the CLI::

    from manage.ops import sync_columns, drop_column_sync

    def upgrade():                       # expand revision
        op.add_column("users", sa.Column("display_name", sa.String(255)))
        sync_columns("users", old="name", new="display_name")

    def upgrade():                       # the matching contract revision
        drop_column_sync("users", old="name", new="display_name")
        op.drop_column("users", "name")
"""

from alembic import op

from manage import column_sync, dialects, run_context


def declare_sync(table, old, new, old_to_new=None, new_to_old=None,
                 check="new_to_old"):
    """Declare a column sync without creating it (arguments as below).

    Share the declaration between the expand revision (``sync_columns``)
    and the data migration (:class:`manage.datamigration.SyncBackfill`).
    """
    return column_sync.declare(table, old, new, old_to_new, new_to_old,
                               check)


def sync_columns(table, old=None, new=None, old_to_new=None, new_to_old=None,
                 check="new_to_old"):
    """Keep old and new columns in sync both ways while old and new code run.

    On insert, whichever side the writer gave fills the other; on update, a
    change to one side is carried to the other; a write that sets both sides
    to values that do not agree is rejected.

    :param table: the table name, or a declaration from
        :func:`declare_sync` (then give no other argument).
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
    safe.  Returns the :class:`~manage.column_sync.ColumnSync`.
    """
    if isinstance(table, column_sync.ColumnSync):
        sync = table
    else:
        sync = declare_sync(table, old, new, old_to_new, new_to_old, check)
    if not run_context.current(op.get_context().config).online:
        return sync
    support = dialects.get(op.get_context().dialect.name)
    for statement in support.drop_sync_sql(sync.table, sync.name):
        op.execute(statement)
    for statement in support.create_sync_sql(sync):
        op.execute(statement)
    return sync


def drop_column_sync(table, old=None, new=None):
    """Remove the sync that :func:`sync_columns` declared (contract step).

    Takes the table and columns, or the declaration.  Harmless when the
    triggers are absent (an offline sync never made them).
    """
    if isinstance(table, column_sync.ColumnSync):
        table, old, new = table.table, table.old, table.new
    name = column_sync.sync_name(table, _columns(old), _columns(new))
    context = op.get_context()
    support = dialects.get(context.dialect.name)
    if not context.as_sql:
        # Only touch triggers that exist: on MySQL with binary logging even
        # DROP TRIGGER IF EXISTS needs SUPER, which an offline sync that
        # never made triggers should not require.
        present = set(support.list_sync_triggers(op.get_bind()))
        if not present & set(support.trigger_names(name)):
            return
    for statement in support.drop_sync_sql(table, name):
        op.execute(statement)


def _columns(value):
    return (value,) if isinstance(value, str) else tuple(value)
