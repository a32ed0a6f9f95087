"""Building blocks shared by the per-dialect trigger generators.

They render the pieces every dialect needs from a ColumnSync: which side a
write gave, which side an update changed, whether the two sides agree, and the
assignments that carry one side over to the other.  Each dialect supplies how
it quotes names and refers to columns; the trigger syntax stays in its module.
"""


def sql_string(text):
    return "'%s'" % text.replace("'", "''")


class TriggerText:
    """Trigger fragments for one ColumnSync in one dialect.

    ``quote`` quotes an identifier; ``same(left, right)`` is the dialect's
    NULL-safe equality (``IS``, ``<=>``, ``IS NOT DISTINCT FROM``).
    """

    def __init__(self, sync, dialect, quote, same):
        self.sync = sync
        self.dialect = dialect
        self.quote = quote
        self.same = same

    @property
    def conflict_message(self):
        s = self.sync
        return "manage: conflicting values written to %s.%s and %s.%s" % (
            s.table, "/".join(s.old), s.table, "/".join(s.new))

    def any_given(self, columns, prefix):
        return " OR ".join("%s%s IS NOT NULL" % (prefix, self.quote(c))
                           for c in columns)

    def any_changed(self, columns):
        return " OR ".join(
            "NOT (%s)" % self.same("NEW." + self.quote(c),
                                   "OLD." + self.quote(c))
            for c in columns)

    def consistent(self, column_ref):
        """Whether the two sides agree, by the sync's check direction."""
        s = self.sync
        direction = s.check
        targets = s.old if direction == "new_to_old" else s.new
        return " AND ".join(
            self.same(s.expression(direction, c, self.dialect, column_ref),
                      column_ref(c))
            for c in targets)

    def assignments(self, direction, target_ref, column_ref):
        """``target = expression, ...`` computing one side from the other."""
        s = self.sync
        targets = s.new if direction == "old_to_new" else s.old
        return ", ".join(
            "%s = (%s)" % (target_ref(c), s.expression(
                direction, c, self.dialect, column_ref))
            for c in targets)
