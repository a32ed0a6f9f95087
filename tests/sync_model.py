"""A pure-Python reference of what each write to a synced table means.

Used by tests/test_sync_properties.py.  A table has a primary key, a plain
``note`` column and one or two column syncs:

``rename``
    old ``name`` -> new ``display_name``, identity mapping (check
    ``new_to_old``); the logical value is a string or None.
``split``
    old ``full`` holding ``"first|last"`` <-> new ``first`` and ``last``
    (check ``old_to_new``); the logical value is a pair of strings without
    ``|``, or None (all columns NULL).

The model keeps, per row, the logical value of each sync (what the last
writer meant, byte for byte) and whether the row's new side has been filled
yet (rows that existed before expand are not, until migrate reaches them).
From that it knows the stored bytes of every column, and it decides each
write the way a trigger can see it:

* An insert gives each side its columns' values, or the column default when
  the writer left a column out.  A side is given when one of its columns is
  not NULL.  When both sides are given they must agree (byte equality, by
  the sync's check direction), except that an old side holding exactly its
  server default was not written by anyone: the new side wins.  Otherwise
  the write is rejected and changes nothing.
* An update changes a side when it changes one of the side's stored bytes.
  A change to one side is carried to the other; a change to both must
  agree.  A partial update of a multi-column side keeps the other fields'
  logical values (also on a row that migrate has not reached yet).
* A NULL written by a writer is that writer's value.  A write that leaves
  every stored byte as it was is no write: no trigger can tell it from an
  update of another column.  (So new code writing NULL to the still-empty
  new side of a row from before expand does not clear it; and a new-code
  insert whose new side is NULL, into a table whose old column has a
  default, reads as an old-code insert of that default.)
* A NOT NULL old column rejects a write whose value is NULL.

Generation of SQL (per engine DDL fragments) lives here too, so that the
property test reads as the property.
"""

import dataclasses
from typing import Dict, Optional, Tuple

SEPARATOR = "|"

#: Columns of each sync: (old columns, new columns).
SYNC_COLUMNS = {
    "rename": (("name",), ("display_name",)),
    "split": (("full",), ("first", "last")),
}
#: The server default an old column may carry (a value of the old side).
OLD_DEFAULT = {"name": "unset", "full": "un|set"}

#: Collations a synced text column may have: an engine-independent kind,
#: and what it is on each engine.  "default" is the database's default:
#: BINARY on SQLite, utf8mb4_unicode_ci on the test MariaDB (case-, accent-
#: and trailing-space-insensitive), C.UTF-8 on the test PostgreSQL.  "ci" on
#: PostgreSQL is a nondeterministic ICU collation the test creates
#: (case-insensitive, canonical equivalence).
COLLATION_KINDS = ("default", "ci", "bin", "extra")
COLLATIONS = {
    "sqlite": {"default": None, "ci": "NOCASE", "bin": "BINARY",
               "extra": "RTRIM"},
    "mysql": {"default": None, "ci": "utf8mb4_general_ci",
              "bin": "utf8mb4_bin", "extra": "utf8mb4_unicode_520_ci"},
    "postgresql": {"default": None, "ci": "ci", "bin": "C",
                   "extra": "und-x-icu"},
}

KEY_KINDS = ("integer", "composite", "text", "uuid")
KEY_COLUMNS = {"integer": ("id",), "composite": ("org_id", "user_id"),
               "text": ("code",), "uuid": ("id",)}


class Rejected(Exception):
    """The model says the database must refuse this write."""


class Unrepresentable(Exception):
    """The write would leave a value the sync's mapping cannot hold (a
    split with one field NULL): the generator's business to avoid."""


@dataclasses.dataclass(frozen=True)
class Shape:
    """One generated table shape."""

    key_kind: str
    syncs: Tuple[str, ...]
    #: Collation kind of each synced column (COLLATION_KINDS; absent:
    #: "default").
    collations: Tuple[Tuple[str, Optional[str]], ...]
    #: Old columns that are NOT NULL.
    not_null: Tuple[str, ...] = ()
    #: Old columns that have a server default (OLD_DEFAULT).
    defaults: Tuple[str, ...] = ()
    #: A WITHOUT ROWID table on SQLite (elsewhere: no effect).
    without_rowid: bool = False
    #: Conflict rules beyond "disagreement", for every sync of the table
    #: (``declare_sync(reject=...)``): "both_sides" (a write that sets or
    #: changes both sides is rejected, even when they agree), "null" (a
    #: write that leaves a column of the sync it writes NULL is rejected).
    reject: Tuple[str, ...] = ()

    @property
    def key_columns(self):
        return KEY_COLUMNS[self.key_kind]

    def old_columns(self):
        return tuple(c for s in self.syncs for c in SYNC_COLUMNS[s][0])

    def new_columns(self):
        return tuple(c for s in self.syncs for c in SYNC_COLUMNS[s][1])

    def collation(self, engine, column):
        """The engine's collation name of a column (None: default)."""
        return COLLATIONS[engine][dict(self.collations).get(column,
                                                             "default")]


# -- encodings of logical values -------------------------------------------
def encode_old(sync, value):
    """{old column: stored value} of a logical value."""
    if sync == "rename":
        return {"name": value}
    return {"full": None if value is None else SEPARATOR.join(value)}


def encode_new(sync, value):
    if sync == "rename":
        return {"display_name": value}
    if value is None:
        return {"first": None, "last": None}
    return {"first": value[0], "last": value[1]}


def decode_old(sync, columns):
    if sync == "rename":
        return columns["name"]
    full = columns["full"]
    if full is None:
        return None
    first, _, last = full.partition(SEPARATOR)
    return (first, last)


def decode_new(sync, columns):
    if sync == "rename":
        return columns["display_name"]
    first, last = columns["first"], columns["last"]
    if first is None and last is None:
        return None
    if first is None or last is None:
        raise Unrepresentable("split with one NULL field: %r" % (columns,))
    return (first, last)


def agree(sync, old, new):
    """Whether stored sides agree by the sync's check direction, byte for
    byte (a NULL source agrees only with an all-NULL target)."""
    if sync == "rename":  # new_to_old: name == display_name
        return old["name"] == new["display_name"]
    # old_to_new: (first, last) == split(full)
    return encode_new("split", decode_old("split", old)) == new


# -- the model --------------------------------------------------------------
@dataclasses.dataclass
class Row:
    values: Dict[str, object]
    settled: Dict[str, bool]
    note: Optional[str] = None


class Model:
    """What every row of one table must hold."""

    def __init__(self, shape):
        self.shape = shape
        self.rows = {}

    # -- stored bytes --------------------------------------------------------
    def physical(self, key):
        """{column: stored value} of a row, as the database must hold it."""
        row = self.rows[key]
        out = {"note": row.note}
        for sync in self.shape.syncs:
            value = row.values[sync]
            out.update(encode_old(sync, value))
            out.update(encode_new(sync, value) if row.settled[sync]
                       else encode_new(sync, None))
        return out

    def contracted(self, key):
        """{new column: value} of a row once the old columns are gone."""
        row = self.rows[key]
        out = {"note": row.note}
        for sync in self.shape.syncs:
            out.update(encode_new(sync, row.values[sync]))
        return out

    def _sides(self, sync, columns):
        old_cols, new_cols = SYNC_COLUMNS[sync]
        return ({c: columns[c] for c in old_cols},
                {c: columns[c] for c in new_cols})

    def _check_not_null(self, sync, value):
        if value is None and any(c in self.shape.not_null
                                 for c in SYNC_COLUMNS[sync][0]):
            raise Rejected("NULL in a NOT NULL old column")

    def _check_null_rule(self, value):
        if value is None and "null" in self.shape.reject:
            raise Rejected("NULL written to a sync that rejects it")

    # -- writes ---------------------------------------------------------------
    def before_expand(self, key, columns):
        """An old-code insert before the new columns and triggers exist."""
        if key in self.rows:
            raise Rejected("duplicate key")
        values = {}
        for sync in self.shape.syncs:
            old = {c: columns.get(c, self._default(c))
                   for c in SYNC_COLUMNS[sync][0]}
            values[sync] = decode_old(sync, old)
            self._check_not_null(sync, values[sync])
        self.rows[key] = Row(values, {s: False for s in self.shape.syncs},
                             columns.get("note"))

    def _default(self, column):
        return OLD_DEFAULT[column] if column in self.shape.defaults else None

    def insert(self, key, columns):
        """An insert after expand; ``columns`` are the ones the writer
        named, with their values."""
        if key in self.rows:
            raise Rejected("duplicate key")
        values = {}
        for sync in self.shape.syncs:
            stored = {c: columns.get(c, self._default(c))
                      for c in self._all(sync)}
            old, new = self._sides(sync, stored)
            old_given = any(v is not None for v in old.values())
            new_given = any(v is not None for v in new.values())
            yields = old_given and new_given and not agree(sync, old, new) \
                and all(c in self.shape.defaults and old[c] == OLD_DEFAULT[c]
                        for c in old)
            if old_given and new_given and not yields and \
                    "both_sides" in self.shape.reject:
                raise Rejected("both sides written")
            if old_given and new_given:
                if agree(sync, old, new):
                    value = decode_old(sync, old)
                elif all(c in self.shape.defaults and old[c] == OLD_DEFAULT[c]
                         for c in old):
                    value = decode_new(sync, new)  # the default is no write
                else:
                    raise Rejected("conflicting sides")
            elif old_given:
                value = decode_old(sync, old)
            elif new_given:
                value = decode_new(sync, new)
            else:
                value = None
            self._check_not_null(sync, value)
            self._check_null_rule(value)
            values[sync] = value
        self.rows[key] = Row(values, {s: True for s in self.shape.syncs},
                             columns.get("note"))

    @staticmethod
    def _all(sync):
        old, new = SYNC_COLUMNS[sync]
        return old + new

    def update(self, key, columns):
        """``UPDATE ... SET columns WHERE key``; no row: nothing."""
        if key not in self.rows:
            return
        before = self.physical(key)
        after = dict(before, **columns)
        row = self.rows[key]
        values, settled = dict(row.values), dict(row.settled)
        for sync in self.shape.syncs:
            old0, new0 = self._sides(sync, before)
            old1, new1 = self._sides(sync, after)
            old_changed, new_changed = old0 != old1, new0 != new1
            if old_changed and new_changed:
                if "both_sides" in self.shape.reject:
                    raise Rejected("both sides written")
                if not agree(sync, old1, new1):
                    raise Rejected("conflicting sides")
                value = decode_old(sync, old1)
            elif old_changed:
                value = decode_old(sync, old1)
            elif new_changed:
                value = self._merge_new(sync, row.values[sync], new0, new1)
            else:
                continue
            self._check_not_null(sync, value)
            self._check_null_rule(value)
            values[sync] = value
            settled[sync] = True
        row.values, row.settled = values, settled
        if "note" in columns:
            row.note = columns["note"]

    @staticmethod
    def _merge_new(sync, current, new0, new1):
        """The logical value after a change of the new side: the changed
        fields from the write, the others as they were meant."""
        if all(v is None for v in new1.values()):
            return None
        meant = encode_new(sync, current)
        merged = {c: new1[c] if new1[c] != new0[c] else meant[c]
                  for c in new1}
        return decode_new(sync, merged)

    def delete(self, key):
        self.rows.pop(key, None)

    def backfilled(self, key, sync):
        """migrate reached the row: its new side is filled."""
        self.rows[key].settled[sync] = True


# -- SQL ---------------------------------------------------------------------
def quote(engine, name):
    return ("`%s`" if engine == "mysql" else '"%s"') % name


def collate_sql(engine, collation):
    if collation is None:
        return ""
    if engine == "postgresql":
        return ' COLLATE "%s"' % collation
    return " COLLATE %s" % collation


def text_type(engine, length):
    return "TEXT" if engine == "sqlite" else "VARCHAR(%d)" % length


def key_type(engine, shape):
    if shape.key_kind in ("integer", "composite"):
        return "INTEGER"
    if shape.key_kind == "uuid":
        return "uuid" if engine == "postgresql" else "CHAR(36)"
    return "VARCHAR(40)" if engine != "sqlite" else "TEXT"


def create_table_sql(engine, shape, table):
    """The table as it stands before expand (old columns only)."""
    e = engine
    q = lambda n: quote(e, n)  # noqa: E731
    cols = ["%s %s NOT NULL" % (q(k), key_type(e, shape))
            for k in shape.key_columns]
    for column in shape.old_columns():
        length = 201 if column == "full" else 100
        spec = "%s %s%s" % (q(column), text_type(e, length),
                            collate_sql(e, shape.collation(e, column)))
        if column in shape.not_null:
            spec += " NOT NULL"
        if column in shape.defaults:
            spec += " DEFAULT '%s'" % OLD_DEFAULT[column]
        cols.append(spec)
    cols.append("%s %s" % (q("note"), text_type(e, 100)))
    cols.append("PRIMARY KEY (%s)" % ", ".join(q(k)
                                              for k in shape.key_columns))
    sql = "CREATE TABLE %s (\n  %s\n)" % (q(table), ",\n  ".join(cols))
    if shape.without_rowid and e == "sqlite":
        sql += " WITHOUT ROWID"
    if e == "mysql":
        sql += " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    return sql


def add_columns_sql(engine, shape, table):
    """Expand: the new columns, nullable, no default."""
    e = engine
    q = lambda n: quote(e, n)  # noqa: E731
    return ["ALTER TABLE %s ADD COLUMN %s %s%s" % (
        q(table), q(c), text_type(e, 100),
        collate_sql(e, shape.collation(e, c)))
        for c in shape.new_columns()]


def split_expressions():
    """old_to_new and new_to_old of the split sync, per dialect.

    Substring searches run in a deterministic collation ("C" on
    PostgreSQL, where nondeterministic ones refuse them).
    """
    old_to_new = {
        "first": {
            "sqlite": "substr({full}, 1, instr({full}, '|') - 1)",
            "mysql": "substring_index({full}, '|', 1)",
            "postgresql": "split_part({full} COLLATE \"C\", '|', 1)",
        },
        "last": {
            "sqlite": "substr({full}, instr({full}, '|') + 1)",
            "mysql": "substring({full}, locate('|', {full}) + 1)",
            "postgresql":
                "substr({full}, strpos({full} COLLATE \"C\", '|') + 1)",
        },
    }
    new_to_old = {
        "sqlite": "{first} || '|' || {last}",
        "mysql": "concat({first}, '|', {last})",
        "postgresql": "{first} || '|' || {last}",
    }
    return old_to_new, new_to_old
