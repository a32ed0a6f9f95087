"""Building blocks shared by the per-dialect trigger generators.

They render the conditions every dialect needs from a ColumnSync: which side
a write gave, which side an update changed, whether the two sides agree, and
the assignments that carry one side over to the other.  Each dialect
supplies how it quotes names and how it compares two values byte for byte;
the trigger syntax stays in its module.

The semantics, the same on every engine:

* Values are equal only when they are equal byte for byte: a case-only,
  accent-only or trailing-space change is a change (no collation decides).
* Two sides agree (:meth:`TriggerText.consistent`) when, in the sync's check
  direction, each target column equals its value computed from the source
  side, and a source side that is all NULL agrees only with a target side
  that is all NULL (NULL is not agreement with ``false``).
* An update that changes only some columns of a multi-column new side, on a
  row the backfill has not reached yet (its sides do not agree), first takes
  the other new columns from the old side: what the writer did not touch
  keeps the value the row meant.
* On insert, a side that holds nothing but its columns' server defaults was
  not written by the application: when the sides disagree, the other side
  decides instead of the write being rejected.
"""

from manage.column_sync import TableShape


def sql_string(text):
    return "'%s'" % text.replace("'", "''")


class TriggerText:
    """Trigger fragments for one ColumnSync in one dialect.

    ``quote`` quotes an identifier; ``same(left, right, kind)`` is the
    dialect's NULL-safe byte equality for values of a kind
    (:data:`manage.column_sync.KINDS`); ``shape`` the reflected
    :class:`~manage.column_sync.TableShape` of the table (or None).
    """

    def __init__(self, sync, dialect, quote, same, shape=None):
        self.sync = sync
        self.dialect = dialect
        self.quote = quote
        self.same = same
        self.shape = shape or TableShape()

    def ref(self, prefix):
        """A column renderer: ``NEW.col``, ``OLD.col`` or a plain name."""
        if not prefix:
            return self.quote
        return lambda c: prefix + self.quote(c)

    @property
    def conflict_message(self):
        s = self.sync
        return "manage: conflicting values written to %s.%s and %s.%s" % (
            s.table, "/".join(s.old), s.table, "/".join(s.new))

    @property
    def null_message(self):
        s = self.sync
        return "manage: NULL written to synced column of %s.%s/%s" % (
            s.table, "/".join(s.old), "/".join(s.new))

    def rejects(self, rule):
        return rule in self.sync.reject

    # -- conditions ----------------------------------------------------------
    def any_given(self, columns, prefix):
        return " OR ".join("%s%s IS NOT NULL" % (prefix, self.quote(c))
                           for c in columns)

    def any_null(self, columns, ref):
        return " OR ".join("%s IS NULL" % ref(c) for c in columns)

    def all_null(self, columns, ref):
        return " AND ".join("%s IS NULL" % ref(c) for c in columns)

    def equal(self, column, left, right):
        """Byte equality of two values of ``column``'s kind."""
        return self.same(left, right, self.shape.kind(column))

    def unchanged(self, column):
        return self.equal(column, "NEW." + self.quote(column),
                          "OLD." + self.quote(column))

    def any_changed(self, columns):
        return " OR ".join("NOT (%s)" % self.unchanged(c) for c in columns)

    def consistent(self, column_ref):
        """Whether the two sides agree, by the sync's check direction."""
        s = self.sync
        direction = s.check
        sources, targets = (s.new, s.old) if direction == "new_to_old" \
            else (s.old, s.new)
        mapped = " AND ".join(
            self.equal(c, s.expression(direction, c, self.dialect,
                                       column_ref), column_ref(c))
            for c in targets)
        source_null = self.all_null(sources, column_ref)
        return "((%s) AND (%s)) OR (NOT (%s) AND %s)" % (
            source_null, self.all_null(targets, column_ref), source_null,
            mapped)

    def only_defaults(self, columns, ref):
        """The side holds its server defaults (NULL where it has none);
        None when no column of the side has a constant default."""
        parts, any_default = [], False
        for c in columns:
            default = self.shape.default(c)
            if default is None:
                parts.append("%s IS NULL" % ref(c))
            else:
                any_default = True
                parts.append(self.equal(c, ref(c), default))
        return " AND ".join(parts) if any_default else None

    def fills_partial_update(self):
        """Whether an update of some new columns may need the others
        filled from the old side (a multi-column new side)."""
        return len(self.sync.new) > 1

    # -- values --------------------------------------------------------------
    def computed(self, direction, column, column_ref):
        """The expression computing ``column`` from the other side."""
        return self.sync.expression(direction, column, self.dialect,
                                    column_ref)

    def assignments(self, direction, target_ref, column_ref):
        """``target = expression, ...`` computing one side from the other."""
        s = self.sync
        targets = s.new if direction == "old_to_new" else s.old
        return ", ".join(
            "%s = (%s)" % (target_ref(c), self.computed(direction, c,
                                                         column_ref))
            for c in targets)
