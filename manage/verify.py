"""The safety net: syncs installed as declared, every row verified.

Two checks, both read-only unless said otherwise:

* **Installed as declared** (:func:`installed_problems`): every sync and copy
  of the registry (:mod:`manage.sync_registry`) has its triggers, each on the
  table it was made on and, where the engine shows the definition, with the
  definition it had when expand made it.  After each expand revision
  (:func:`on_version_apply`, inside the revision's transaction) a broken one
  is re-created at once from its recorded statements (:func:`repair`): a
  later revision that rebuilt the table (``op.batch_alter_table`` on SQLite)
  dropped its triggers without a word.  Before ``migrate`` and ``contract``
  a broken one is refused (:func:`require_installed`).
* **Every row agrees** (:func:`count_disagreeing`): for a sync, the rows
  whose two sides do not agree, byte for byte, in the sync's check
  direction (``NOT consistent_sql``); for a copy, the source rows with a
  value whose target row is missing or differs, and the target rows whose
  source row does not hold the same value.  Before a contract revision
  removes a sync or copy, any such row refuses the contract
  (:func:`require_consistent`): dropping the old side would lose it.
"""

import dataclasses
import types
from typing import Dict, Iterable, List, Optional, Tuple, Union

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from manage import dialects, run_context, sync_registry, table_shape
from manage import version_table as vt
from manage.column_sync import ColumnCopy, ColumnSync, SyncGroup
from manage.exceptions import OutOfOrderError

#: Sample keys reported per sync or copy.
SAMPLES = 5


class SyncNotInstalledError(OutOfOrderError):
    """A recorded sync or copy is not installed as expand made it (a
    trigger is missing, on another table, or changed): writes are not
    synced.  ``manage db expand`` re-creates it."""


class RowsDisagreeError(OutOfOrderError):
    """Rows whose old and new sides disagree: the contract that removes
    their sync or copy would lose what they hold."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A sync or copy whose rows can be verified.

    ``group``: the registry entry it belongs to (None: known from a data
    migration or a contract revision only, no triggers recorded).
    ``revision``: the expand revision that declared it, when known.
    ``contract``: a pending contract revision that carries it, when it was
    found there.
    """

    declaration: Union[ColumnSync, ColumnCopy]
    group: Optional[str] = None
    revision: Optional[str] = None
    contract: Optional[str] = None

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def kind(self) -> str:
        return sync_registry.COPY if isinstance(
            self.declaration, ColumnCopy) else sync_registry.SYNC

    @property
    def table(self) -> str:
        return self.declaration.table

    @property
    def columns(self) -> str:
        """``old -> new`` as the operator reads it."""
        d = self.declaration
        if isinstance(d, ColumnCopy):
            return "%s.%s -> %s.%s" % (d.table, d.column, d.target,
                                       d.target_column)
        return "%s.%s -> %s" % (d.table, ", ".join(d.old), ", ".join(d.new))


@dataclasses.dataclass
class Count:
    """Rows of a target that disagree (``rows`` None: could not count,
    ``error`` says why)."""

    rows: Optional[int]
    sample_keys: List = dataclasses.field(default_factory=list)
    error: Optional[str] = None


# -- installed as declared ---------------------------------------------------
def installed_problems(connection, support,
                       entries: Iterable[sync_registry.Entry]
                       ) -> Dict[str, str]:
    """``{entry name: what is wrong}`` for the entries not installed as
    recorded (an empty dict when all are)."""
    entries = list(entries)
    if not entries:
        return {}
    present = support.describe_sync_triggers(connection)
    problems = {}
    for entry in entries:
        missing, moved, changed = [], [], []
        for name, (table, digest) in entry.triggers:
            if name not in present:
                missing.append(name)
                continue
            on, definition = present[name]
            if table and on and on != table:
                moved.append("%s is on %s, not %s" % (name, on, table))
            elif digest and definition is not None and \
                    sync_registry.digest(definition) != digest:
                changed.append(name)
        parts = []
        if missing:
            parts.append("trigger(s) %s missing" % ", ".join(missing))
        parts += moved
        if changed:
            parts.append("trigger(s) %s changed since expand made them"
                         % ", ".join(changed))
        if parts:
            problems[entry.name] = "; ".join(parts)
    return problems


def repair(connection, support, entries: Iterable[sync_registry.Entry],
           after: str = "expand") -> List[str]:
    """Re-create, from their recorded statements, the entries that are not
    installed as recorded; returns their names.  Runs on ``connection`` in
    its transaction (an expand revision's, or the caller's); ``after`` is
    recorded as :attr:`~manage.sync_registry.Entry.repaired_after`."""
    entries = list(entries)
    broken = installed_problems(connection, support, entries)
    for entry in entries:
        if entry.name not in broken:
            continue
        for statement in entry.drop + entry.create:
            connection.execute(sa.text(statement))
        sync_registry.update_triggers(connection, support, entry, after)
    return [e.name for e in entries if e.name in broken]


def require_installed(connection, support, doing: str) -> None:
    """Raise :class:`SyncNotInstalledError`, one line naming the sync, its
    table and the repair, when a recorded sync or copy is not installed as
    recorded.  ``doing``: ``"migrate"`` or ``"contract"``."""
    entries = {e.name: e for e in sync_registry.read(connection)}
    problems = installed_problems(connection, support, entries.values())
    if not problems:
        return
    raise SyncNotInstalledError(
        "%s refused: %s; writes are not synced while they are not "
        "installed: run `manage db expand`, which re-creates them from what "
        "expand recorded, then `manage db %s` again; nothing was changed"
        % (doing, "; ".join(
            "%s %s on table %s: %s" % (
                entries[n].kind, n, ", ".join(entries[n].tables), p)
            for n, p in sorted(problems.items())), doing))


def on_version_apply(ctx, step, heads, run_args) -> None:
    """Alembic callback, inside each revision's transaction.

    Gives the registry rows an expand revision made its id; after an expand
    revision of an online run, re-creates every recorded sync and copy
    that is not installed as recorded.
    """
    connection = ctx.connection
    if not step.is_upgrade or ctx.as_sql or connection is None or \
            not vt.exists(connection):
        return
    revision = step.up_revision
    labels = revision.branch_labels if revision is not None else ()
    if "expand" not in labels:
        return  # syncs are declared in expand revisions only
    sync_registry.stamp(connection, step.up_revision_id)
    if not run_context.current(ctx.config).online:
        return
    support = dialects.get(connection.dialect.name)
    repair(connection, support, sync_registry.read(connection),
           step.up_revision_id)


# -- every row agrees --------------------------------------------------------
def targets(entries: Iterable[sync_registry.Entry],
            declared: Iterable[Target] = ()) -> List[Target]:
    """The syncs and copies to verify: each declaration of the registry,
    then those ``declared`` elsewhere that the registry does not hold."""
    found = {}
    for entry in entries:
        for d in entry.declarations:
            found[d.name] = Target(d, entry.name, entry.revision)
    for target in declared:
        found.setdefault(target.name, target)
    return [found[n] for n in sorted(found)]


def declarations_of(value) -> List[Union[ColumnSync, ColumnCopy]]:
    """The ColumnSync and ColumnCopy objects a value is or holds (a
    declaration, a SyncGroup, or a sequence of them)."""
    if isinstance(value, (ColumnSync, ColumnCopy)):
        return [value]
    if isinstance(value, SyncGroup):
        return list(value.syncs)
    if isinstance(value, (list, tuple)):
        return [d for v in value for d in declarations_of(v)]
    return []


def declarations_in_module(module) -> List[Union[ColumnSync, ColumnCopy]]:
    """The declarations a revision module holds or imports: its own
    globals and the globals of the modules it imports (one level)."""
    found = []
    for value in vars(module).values():
        if isinstance(value, types.ModuleType):
            if getattr(value, "__name__", "").startswith(
                    ("manage", "sqlalchemy", "alembic")):
                continue
            for inner in vars(value).values():
                found += declarations_of(inner)
        else:
            found += declarations_of(value)
    return found


def columns_exist(connection, target: Target) -> bool:
    """Whether the tables and columns a target joins are all there."""
    inspector = sa.inspect(connection)
    d = target.declaration
    if isinstance(d, ColumnCopy):
        needed = {d.table: {d.column, d.key},
                  d.target: {d.target_key, d.target_column}}
    else:
        needed = {d.table: set(d.columns())}
    for table, columns in needed.items():
        if not inspector.has_table(table):
            return False
        if not columns <= {c["name"] for c in inspector.get_columns(table)}:
            return False
    return True


def count_disagreeing(connection, support, target: Target,
                      samples: int = SAMPLES) -> Count:
    """Count the rows of ``target`` that disagree, with up to ``samples``
    of their primary keys (a tuple per key of several columns).

    Never raises for a query the database refused: the error comes back
    in :attr:`Count.error` (and the transaction is rolled back).
    """
    try:
        if isinstance(target.declaration, ColumnCopy):
            sql, key_columns = _copy_disagreeing(connection, support,
                                                 target.declaration)
        else:
            sql, key_columns = _sync_disagreeing(connection, support,
                                                 target.declaration)
        rows = int(connection.execute(sa.text(
            "SELECT count(*) FROM (%s) manage_d" % sql)).scalar() or 0)
        unreadable = support.value_warnings(connection, reading=True)
        if unreadable:  # a NULL that stands for "could not read"
            return Count(None, [], "the database could not read a value "
                         "(%s)" % "; ".join(unreadable))
        keys = []
        if rows and key_columns:
            order = ", ".join(key_columns)
            keys = [_key(r) for r in connection.execute(sa.text(
                "SELECT %s FROM (%s) manage_d ORDER BY %s LIMIT %d" % (
                    order, sql, order, int(samples))))]
        return Count(rows, keys)
    except sa_exc.SQLAlchemyError as exc:
        if connection.in_transaction():
            connection.rollback()  # PostgreSQL: the failed query aborted it
        return Count(None, [], str(getattr(exc, "orig", exc)).strip()
                     .splitlines()[0][:200])


def _sync_disagreeing(connection, support, sync):
    quote = connection.dialect.identifier_preparer.quote
    shape = table_shape.reflect(connection, sync.table)
    key = [quote(c) for c in shape.key]
    condition = "NOT (%s)" % support.consistent_sql(sync, quote, shape)
    columns = ", ".join(key) if key else "1 AS manage_one"
    return ("SELECT %s FROM %s WHERE %s" % (columns, quote(sync.table),
                                            condition), key)


def _copy_disagreeing(connection, support, copy):
    quote = connection.dialect.identifier_preparer.quote
    shape = table_shape.reflect(connection, copy.table)
    values = dict(table=quote(copy.table), col=quote(copy.column),
                  key=quote(copy.key), target=quote(copy.target),
                  tkey=quote(copy.target_key),
                  tcol=quote(copy.target_column))
    same = support.null_safe_equal(
        "manage_t.{tcol}".format(**values), "manage_s.{col}".format(**values),
        shape.kind(copy.column))
    sql = (
        # A value of the old column the target does not hold.
        "SELECT manage_s.{key} AS manage_key FROM {table} manage_s "
        "WHERE manage_s.{col} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
        "{target} manage_t WHERE manage_t.{tkey} = manage_s.{key} AND "
        "{same}) "
        "UNION "
        # A target row whose source row does not hold its value.
        "SELECT manage_t.{tkey} AS manage_key FROM {target} manage_t "
        "WHERE NOT EXISTS (SELECT 1 FROM {table} manage_s WHERE "
        "manage_s.{key} = manage_t.{tkey} AND {same})").format(
            same=same, **values)
    return sql, ["manage_key"]


def _key(row):
    values = [v if isinstance(v, (int, float, str)) or v is None else str(v)
              for v in tuple(row)]
    return values[0] if len(values) == 1 else tuple(values)


def describe_count(target: Target, count: Count) -> str:
    """``sync NAME (table.old -> new): N row(s) disagree, keys ...``."""
    what = "%s %s (%s)" % (target.kind, target.name, target.columns)
    if count.rows is None:
        return "%s: rows could not be verified: %s" % (what, count.error)
    keys = ""
    if count.sample_keys:
        keys = ", keys %s%s" % (", ".join(_show(k) for k in
                                          count.sample_keys),
                                ", ..." if count.rows > len(
                                    count.sample_keys) else "")
    return "%s: %d row(s) disagree%s" % (what, count.rows, keys)


def _show(key):
    if isinstance(key, tuple):
        return "(%s)" % ", ".join(_show(k) for k in key)
    return str(key)


def require_consistent(counts: List[Tuple[Target, Count]]) -> None:
    """Raise :class:`RowsDisagreeError` when any count is not zero (or
    could not be made), naming each sync, its count and sample keys."""
    bad = [(t, c) for t, c in counts if c.rows != 0]
    if not bad:
        return
    raise RowsDisagreeError(
        "contract refused: rows whose old and new sides disagree, which "
        "the contract would lose: %s. Make each row's two sides agree "
        "(write the intended value again: the triggers carry it across), "
        "then run `manage db contract` again; nothing was changed"
        % "; ".join(describe_count(t, c) for t, c in bad))
