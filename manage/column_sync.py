"""The declaration that old and new columns stay in sync, independent of SQL.

A :class:`ColumnSync` names a table, its old columns, its new columns, the
expressions that compute each new column from the old side and each old
column from the new side, and which direction decides whether the two sides
agree.  The per-dialect modules in :mod:`manage.dialects` turn it into
triggers.

Expressions are SQL text in which column references are written in braces,
``"CASE WHEN {is_public} THEN 'public' ELSE 'private' END"``; each dialect
renders a reference as it needs it (``NEW.col`` in a row trigger, a plain
column name in an UPDATE).  Literal braces are doubled.  An expression may be
a mapping of dialect name to text, with an optional ``"default"`` entry.
"""

import dataclasses
import hashlib
import re
import string
from typing import Dict, Tuple, Union

from manage.exceptions import ManageError

Expression = Union[str, Dict[str, str]]

CHECK_DIRECTIONS = ("new_to_old", "old_to_new")
#: Conflict rules a sync can choose (``reject=``); see :func:`declare`.
#: ``disagreement``: a write that sets both sides to values that do not
#: agree is rejected (always on); ``both_sides``: any write that sets both
#: sides is rejected, even when they agree; ``null``: a write that leaves a
#: synced column NULL is rejected.
REJECT_RULES = ("disagreement", "both_sides", "null")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# MySQL and PostgreSQL limit identifiers to 64 and 63 characters.
MAX_NAME = 48


class ColumnSyncError(ManageError):
    """A column sync declaration is inconsistent."""


@dataclasses.dataclass(frozen=True)
class ColumnSync:
    table: str
    old: Tuple[str, ...]
    new: Tuple[str, ...]
    old_to_new: Tuple[Tuple[str, Expression], ...]
    new_to_old: Tuple[Tuple[str, Expression], ...]
    check: str = "new_to_old"
    reject: Tuple[str, ...] = ("disagreement",)

    @property
    def name(self):
        """A stable, short identifier used to name the triggers."""
        return sync_name(self.table, self.old, self.new)

    def columns(self):
        return self.old + self.new

    def expression(self, direction, column, dialect, render_column):
        """Render the expression computing ``column`` for ``dialect``."""
        mapping = dict(self.old_to_new if direction == "old_to_new"
                       else self.new_to_old)
        return render(mapping[column], dialect, render_column)


def is_identity(sync):
    """Whether every expression of a sync copies one column unchanged."""
    def plain(expression):
        texts = expression.values() if isinstance(expression, dict) \
            else [expression]
        return all(re.match(r"^\{[A-Za-z_][A-Za-z0-9_]*\}$", t.strip())
                   for t in texts)
    return all(plain(e) for _, e in sync.old_to_new + sync.new_to_old)


def sync_name(table, old, new):
    """The identifier of the sync between these columns of a table."""
    return _short("msync_%s_%s_%s" % (table, "_".join(old), "_".join(new)))


#: Kinds of column value, for byte equality: ``text`` (compared byte for
#: byte, without collation), ``binary`` and ``other`` (compared as values).
KINDS = ("text", "binary", "other")


@dataclasses.dataclass(frozen=True)
class TableShape:
    """What the triggers of a table need to know of it, reflected at expand.

    ``key``: the primary key columns (empty: unknown; SQLite then finds the
    row by ``rowid``).  ``kinds``: column name to one of :data:`KINDS`
    (missing: ``text``, the strict choice).  ``defaults``: column name to
    the SQL literal of its constant server default; a side that holds only
    its defaults on insert was not written by the application.
    """

    key: Tuple[str, ...] = ()
    kinds: Tuple[Tuple[str, str], ...] = ()
    defaults: Tuple[Tuple[str, str], ...] = ()

    def kind(self, column):
        return dict(self.kinds).get(column, "text")

    def default(self, column):
        return dict(self.defaults).get(column)


@dataclasses.dataclass(frozen=True)
class SyncGroup:
    """Syncs of one table that share one trigger per event.

    Every trigger invocation costs a write something; one trigger that holds
    several syncs' work costs about as much as a trigger for one.
    """

    syncs: Tuple[ColumnSync, ...]

    @property
    def table(self):
        return self.syncs[0].table

    @property
    def name(self):
        return group_name(self.table, [(s.old, s.new) for s in self.syncs])

    def columns(self):
        return tuple(c for s in self.syncs for c in s.columns())


def as_group(syncs):
    """A SyncGroup from a ColumnSync, several, or a group."""
    if isinstance(syncs, SyncGroup):
        return syncs
    if isinstance(syncs, ColumnSync):
        syncs = (syncs,)
    syncs = tuple(syncs)
    if not syncs:
        raise ColumnSyncError("no column sync given")
    if len({s.table for s in syncs}) != 1:
        raise ColumnSyncError("syncs grouped in one trigger must be of one "
                              "table")
    columns = [c for s in syncs for c in s.columns()]
    if len(columns) != len(set(columns)):
        raise ColumnSyncError("syncs grouped in one trigger must not share "
                              "columns")
    return SyncGroup(syncs)


def group_name(table, pairs):
    """The trigger name stem of the syncs ``[(old, new), ...]`` of a table."""
    if len(pairs) == 1:
        return sync_name(table, *pairs[0])
    return _short("msync_%s_%s" % (table, "_".join(
        c for old, new in pairs for c in tuple(old) + tuple(new))))


def _short(name):
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return name[:MAX_NAME - 9] + "_" + digest


@dataclasses.dataclass(frozen=True)
class ColumnCopy:
    """A column that moves to another table, copied there on every write.

    Each insert or update of ``table.column`` is carried to the row of
    ``target`` whose ``target_key`` equals ``table.key`` (inserted or
    updated; deleted when the column is set to NULL).  One way only: new
    code writes both places during the transition.
    """

    table: str
    column: str
    key: str
    target: str
    target_key: str
    target_column: str

    @property
    def name(self):
        return _short("msync_%s_%s_to_%s" % (self.table, self.column,
                                            self.target))


def declare_copy(table, column, target, target_key, key="id",
                 target_column=None):
    copy = ColumnCopy(table, column, key, target, target_key,
                      target_column or column)
    for name in dataclasses.astuple(copy):
        if not _IDENTIFIER.match(name):
            raise ColumnSyncError("not a plain SQL identifier: %r" % name)
    return copy


def declare(table, old, new, old_to_new=None, new_to_old=None,
            check="new_to_old", reject=("disagreement",)):
    """Build and validate a ColumnSync from the helper's arguments.

    ``reject`` is one rule of :data:`REJECT_RULES` or several; the rule
    ``disagreement`` always applies.  Raises :class:`ColumnSyncError`.
    """
    old_cols = _as_columns(old, "old")
    new_cols = _as_columns(new, "new")
    for name in (table,) + old_cols + new_cols:
        if not _IDENTIFIER.match(name):
            raise ColumnSyncError("not a plain SQL identifier: %r" % name)
    if set(old_cols) & set(new_cols):
        raise ColumnSyncError("a column cannot be both old and new")
    if check not in CHECK_DIRECTIONS:
        raise ColumnSyncError("check must be one of %s" % (CHECK_DIRECTIONS,))
    forward = _per_column(old_to_new, new_cols, old_cols, "old_to_new")
    backward = _per_column(new_to_old, old_cols, new_cols, "new_to_old")
    rules = (reject,) if isinstance(reject, str) else tuple(reject)
    unknown = set(rules) - set(REJECT_RULES)
    if unknown:
        raise ColumnSyncError("unknown conflict rule(s) %s; reject takes %s"
                              % (", ".join(sorted(unknown)),
                                 ", ".join(REJECT_RULES)))
    rules = tuple(r for r in REJECT_RULES
                  if r in rules or r == "disagreement")
    return ColumnSync(table, old_cols, new_cols, forward, backward, check,
                      rules)


def _as_columns(value, what):
    cols = (value,) if isinstance(value, str) else tuple(value)
    if not cols:
        raise ColumnSyncError("at least one %s column is needed" % what)
    return cols


def _per_column(expressions, targets, sources, what):
    """Normalise to ((target column, expression), ...)."""
    if expressions is None:
        if len(targets) != 1 or len(sources) != 1:
            raise ColumnSyncError(
                "%s is required when syncing more than one column" % what)
        return ((targets[0], "{%s}" % sources[0]),)
    if len(targets) == 1 and (isinstance(expressions, str) or
                              not set(expressions) & set(targets)):
        # One target: the expression itself (text or per-dialect mapping).
        expressions = {targets[0]: expressions}
    missing = set(targets) - set(expressions)
    extra = set(expressions) - set(targets)
    if missing or extra:
        raise ColumnSyncError("%s must give one expression per column %s"
                              % (what, sorted(targets)))
    return tuple((t, expressions[t]) for t in targets)


def render(expression, dialect, render_column):
    """Substitute ``{column}`` references in the dialect's text."""
    if isinstance(expression, dict):
        if dialect in expression:
            expression = expression[dialect]
        elif "default" in expression:
            expression = expression["default"]
        else:
            raise ColumnSyncError("no expression given for dialect %s"
                                  % dialect)
    out = []
    for literal, field, spec, conv in string.Formatter().parse(expression):
        out.append(literal)
        if field is None:
            continue
        if not _IDENTIFIER.match(field) or spec or conv:
            raise ColumnSyncError("bad column reference {%s} in %r"
                                  % (field, expression))
        out.append(render_column(field))
    return "".join(out)
