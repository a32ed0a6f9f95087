"""Refuse at expand the table shapes a column sync or copy cannot support.

:func:`check_sync` (called by :func:`manage.ops.sync_columns`) and
:func:`check_copy` (by :func:`manage.ops.copy_column_to_table`) reflect the
tables on the revision's connection before any trigger is created and raise
:class:`manage.exceptions.ShapeError` (exit code 1), one line naming the
table, the column(s) and the reason, when:

* the table does not exist, is a view, or has neither a primary key nor a
  unique key of NOT NULL columns (the backfill walks a key);
* its storage cannot carry triggers atomically with the write (the
  dialect's :meth:`~manage.dialects.base.DialectSupport.storage_refusal`:
  MySQL engines without transactions, PostgreSQL foreign tables, SQLite
  virtual tables);
* a column the sync or copy names, or an expression refers to, does not
  exist, or is a generated column (it cannot be written);
* a mapping that copies one column unchanged (the expression is just
  ``{column}``) feeds a column that cannot hold every value of its source:
  type family, length, character set, integer range, numeric precision and
  scale, enum values, NULL.  A sync is two-way, so both directions are
  checked.  Expression mappings are the author's responsibility (their
  columns must exist), verified row by row before contract;
* an old column is NOT NULL without a server default where the engine
  checks NOT NULL before the sync triggers fill it (SQLite), or is the
  moved column of a copy (new code inserts rows without it).

On SQLite and PostgreSQL the refusal rolls the revision back, so nothing
changed; on MySQL, whose DDL is not transactional, what the revision did
before the call stays, and the message says so
(:meth:`~manage.dialects.base.DialectSupport.refusal_outcome`).
"""

import dataclasses
import re
import string
from typing import Dict, Optional, Tuple

import sqlalchemy as sa

from manage import column_sync, dialects
from manage.exceptions import ShapeError

#: Character sets that hold every Unicode character; and those that hold
#: the Basic Multilingual Plane (so every single-byte character set too).
_ALL_UNICODE = {"utf8mb4", "utf16", "utf16le", "utf32"}
_BMP = {"utf8mb3", "utf8", "ucs2"}


@dataclasses.dataclass(frozen=True)
class Domain:
    """The values a column can hold, as far as a sync needs to know.

    ``family``: ``text``, ``enum``, ``json``, ``binary``, ``boolean``,
    ``integer``, ``decimal``, ``float``, ``date``, ``datetime``, ``time``,
    ``uuid`` or ``other`` (compared by ``type_sql`` only).  ``chars`` and
    ``bytes``: the most characters and bytes a value may have (None: no
    limit known to apply); ``charset``: the character set (None: the
    database's one, shared by every column); ``bytes_per_char``: its
    widest character in bytes.  ``int_range``: (lowest, highest) of an
    integer; ``precision``/``scale`` of a decimal (precision None: any);
    ``values`` of an enum; ``timezone``/``fraction`` of a date-time.
    """

    name: str
    type_sql: str
    family: str
    nullable: bool = True
    generated: bool = False
    chars: Optional[int] = None
    bytes: Optional[int] = None
    charset: Optional[str] = None
    bytes_per_char: Optional[int] = None
    int_range: Optional[Tuple[int, int]] = None
    precision: Optional[int] = None
    scale: Optional[int] = None
    values: Tuple[str, ...] = ()
    timezone: Optional[bool] = None
    fraction: Optional[int] = None

    def describe(self):
        return "%s %s" % (self.name, self.type_sql)


@dataclasses.dataclass
class _Table:
    name: str
    columns: Dict[str, dict]
    domains: Dict[str, Domain]


def check_sync(context, group) -> None:
    """Refuse a sync (or group of one table's syncs) that the table's shape
    cannot support; ``context`` is the revision's Alembic MigrationContext.

    Does nothing when SQL is generated offline (``--sql``).
    Raises :class:`ShapeError`.
    """
    if context.as_sql:
        return
    group = column_sync.as_group(group)
    connection = context.bind
    support = dialects.get(context.dialect.name)
    for sync in group.syncs:
        subject = "sync %s.%s -> %s.%s" % (
            sync.table, "/".join(sync.old), sync.table, "/".join(sync.new))
        refuse = _refuser(subject, support)
        table = _reflect(connection, support, sync.table, refuse)
        _require_columns(table, sync.columns(), refuse)
        _refuse_generated(table, sync.columns(), refuse)
        for direction in ("old_to_new", "new_to_old"):
            for target, expression in getattr(sync, direction):
                text = _dialect_text(expression, support.name)
                _require_columns(table, _references(text), refuse)
                source = _identity_source(text)
                if source is None or source == target:
                    continue    # an expression: the author's responsibility
                reason = holds(table.domains[target], table.domains[source])
                if reason:
                    refuse("%s.%s cannot hold every value of %s.%s: %s" % (
                        sync.table, table.domains[target].describe(),
                        sync.table, table.domains[source].describe(),
                        reason))
        if support.not_null_checked_before_triggers():
            backward = dict(sync.new_to_old)
            for column in sync.old:
                info = table.columns[column]
                keeps = column in _references(_dialect_text(
                    backward[column], support.name))
                if keeps:   # computed from itself: new code still writes it
                    continue
                if not info["nullable"] and info.get("default") is None:
                    refuse(
                        "old column %s.%s is NOT NULL without a server "
                        "default, and %s checks NOT NULL before the sync "
                        "triggers fill it, so new code's inserts would "
                        "fail; make it nullable (or give it a server "
                        "default) in an earlier expand revision, and NOT "
                        "NULL again after contract if still needed"
                        % (sync.table, column, support.name))


def check_copy(context, copy) -> None:
    """Refuse a column copy (:func:`manage.ops.declare_copy`) that the two
    tables' shapes cannot support; arguments as :func:`check_sync`.

    Raises :class:`ShapeError`.
    """
    if context.as_sql:
        return
    connection = context.bind
    support = dialects.get(context.dialect.name)
    refuse = _refuser("copy %s.%s -> %s.%s" % (
        copy.table, copy.column, copy.target, copy.target_column), support)
    source = _reflect(connection, support, copy.table, refuse)
    _require_columns(source, (copy.key, copy.column), refuse)
    target = _reflect(connection, support, copy.target, refuse)
    _require_columns(target, (copy.target_key, copy.target_column), refuse)
    _refuse_generated(source, (copy.column,), refuse)
    _refuse_generated(target, (copy.target_key, copy.target_column), refuse)
    inspector = sa.inspect(connection)
    if not _is_unique(inspector, copy.table, (copy.key,)):
        refuse("%s.%s is not a primary or unique key of %s: each row's "
               "copy is found by it" % (copy.table, copy.key, copy.table))
    if not _is_unique(inspector, copy.target, (copy.target_key,)):
        refuse("%s.%s has no unique constraint or index of its own: the "
               "copy trigger upserts the row it names" % (
                   copy.target, copy.target_key))
    moved = ((copy.target, target.domains[copy.target_column]),
             (copy.table, source.domains[copy.column]))
    keys = ((copy.target, target.domains[copy.target_key]),
            (copy.table, source.domains[copy.key]))
    for (to_table, to), (from_table, frm) in (moved, moved[::-1], keys):
        # NULL is no row in the target: nullability is not compared.
        reason = holds(dataclasses.replace(to, nullable=True), frm)
        if reason:
            refuse("%s.%s cannot hold every value of %s.%s: %s" % (
                to_table, to.describe(), from_table, frm.describe(), reason))
    if not source.columns[copy.column]["nullable"]:
        refuse("the moved column %s.%s is NOT NULL: new code inserts %s "
               "rows without it (it writes %s only); make it nullable in "
               "an earlier expand revision" % (
                   copy.table, copy.column, copy.table, copy.target))
    for name, info in target.columns.items():
        if name in (copy.target_key, copy.target_column):
            continue
        if not info["nullable"] and not _filled_by_database(
                inspector, copy.target, name, info):
            refuse("%s.%s is NOT NULL without a server default: the copy "
                   "trigger inserts %s rows with %s and %s only" % (
                       copy.target, name, copy.target, copy.target_key,
                       copy.target_column))


def holds(target: Domain, source: Domain) -> Optional[str]:
    """Why ``target`` cannot hold every value ``source`` can, or None."""
    if source.nullable and not target.nullable:
        return ("%s may be NULL and %s is NOT NULL; make %s nullable until "
                "contract, or map with an expression" % (
                    source.name, target.name, target.name))
    reason = _holds_values(target, source)
    if reason:
        return reason + "; change the type or map with an expression"
    return None


def _holds_values(t, s):
    if t.family == "other" or s.family == "other":
        if t.type_sql == s.type_sql and t.charset == s.charset:
            return None
        return "the types differ and manage cannot tell that one holds the " \
               "other"
    if s.family == "enum":
        if t.family == "enum":
            missing = [v for v in s.values if v not in t.values]
            if missing:
                return "value(s) %s are not in the target enum" % ", ".join(
                    repr(v) for v in missing)
            return None
        if t.family == "text":
            return _holds_text(t, s)
    if t.family != s.family:
        allowed = {("text", "json"), ("text", "uuid"),
                   ("decimal", "integer")}
        if (t.family, s.family) not in allowed:
            return "%s and %s are different kinds of value" % (
                _family_word(t), _family_word(s))
    family = t.family
    if family == "text":
        if s.family == "uuid":
            return None if t.chars is None or t.chars >= 36 else \
                "a UUID has 36 characters, at most %d fit" % t.chars
        return _holds_text(t, s)
    if family == "json":
        if t.type_sql != s.type_sql:
            return ("%s and %s store a document differently (key order, "
                    "spaces, duplicate keys), so the two sides would never "
                    "be byte-equal" % (s.type_sql, t.type_sql))
        return _holds_text(t, s)
    if family == "binary":
        if t.bytes is not None and (s.bytes is None or s.bytes > t.bytes):
            return "up to %s bytes, at most %d fit" % (
                "any number of" if s.bytes is None else s.bytes, t.bytes)
        return None
    if family == "integer":
        return _holds_range(t.int_range, s.int_range)
    if family == "decimal":
        if s.family == "integer":
            if t.precision is None:
                return None
            lo, hi = s.int_range or (-(2 ** 63), 2 ** 63 - 1)
            digits = len(str(max(abs(lo), abs(hi))))
            if digits <= t.precision - (t.scale or 0):
                return None
            return "%d-digit integers, at most %d integer digits fit" % (
                digits, t.precision - (t.scale or 0))
        if t.precision is None:
            return None
        if s.precision is None:
            return "any number of digits, at most %d fit" % t.precision
        s_int, t_int = s.precision - (s.scale or 0), t.precision - (
            t.scale or 0)
        if (s.scale or 0) > (t.scale or 0):
            return "%d decimal places, %d kept" % (s.scale or 0,
                                                  t.scale or 0)
        if s_int > t_int:
            return "%d integer digits, at most %d fit" % (s_int, t_int)
        return None
    if family == "float":
        if t.type_sql == s.type_sql or (t.precision or 53) >= (
                s.precision or 53):
            return None
        return "a %s keeps fewer digits than a %s" % (t.type_sql, s.type_sql)
    if family in ("datetime", "time"):
        if t.timezone is not None and s.timezone is not None and \
                t.timezone != s.timezone:
            return "one has a time zone and the other not"
        if t.fraction is not None and s.fraction is not None and \
                t.fraction < s.fraction:
            return "%d fractional second digits, %d kept" % (s.fraction,
                                                             t.fraction)
        return None
    return None


def _holds_text(t, s):
    """Length and character set of one text (or enum) column in another."""
    if s.family == "enum":
        s_chars = max((len(v) for v in s.values), default=0)
        s_bytes = max((len(v.encode("utf-8")) for v in s.values), default=0)
    else:
        s_chars = _min(s.chars, s.bytes)
        s_bytes = s.bytes
    if t.chars is not None and (s_chars is None or s_chars > t.chars):
        return "up to %s characters, at most %d fit" % (
            "any number of" if s_chars is None else s_chars, t.chars)
    same_charset = s.charset == t.charset
    if s.family == "enum":
        need = s_bytes if same_charset or t.charset in _ALL_UNICODE else \
            (None if s_chars is None else s_chars * (t.bytes_per_char or 4))
    elif same_charset:
        need = s_bytes if s_bytes is not None else (
            None if s_chars is None or t.bytes_per_char is None
            else s_chars * t.bytes_per_char)
    else:
        need = None if s_chars is None else s_chars * (t.bytes_per_char or 4)
    if t.bytes is not None and (need is None or need > t.bytes):
        return "values of up to %s bytes, at most %d bytes fit" % (
            "any number of" if need is None else need, t.bytes)
    if s.family != "enum" and not _charset_holds(t.charset, s.charset):
        return "character set %s cannot hold every character of %s" % (
            t.charset, s.charset)
    if s.family == "enum" and t.charset and t.charset not in _ALL_UNICODE:
        for value in s.values:
            if t.charset == "ascii" and not value.isascii():
                return "value %r is not in character set ascii" % value
    return None


def _charset_holds(target, source):
    if target == source or target is None or source is None:
        return True
    if target in _ALL_UNICODE:
        return True
    if source == "ascii" and target != "binary":
        return True
    return target in _BMP and source not in _ALL_UNICODE


def _holds_range(t, s):
    if t is None or s is None:
        return None if t == s else "integer ranges differ"
    if t[0] <= s[0] and s[1] <= t[1]:
        return None
    return "integers from %d to %d, only %d to %d fit" % (s + t)


def _family_word(domain):
    return {"text": "text", "enum": "enum", "json": "JSON",
            "binary": "binary", "boolean": "boolean",
            "integer": "integer", "decimal": "decimal", "float": "float",
            "date": "date", "datetime": "date-time", "time": "time",
            "uuid": "UUID"}.get(domain.family, domain.type_sql)


def _min(a, b):
    known = [v for v in (a, b) if v is not None]
    return min(known) if known else None


# -- reflection
# ----------------------------------------------------------------
def _refuser(subject, support):
    outcome = support.refusal_outcome()

    def refuse(reason):
        raise ShapeError("%s refused: %s. %s" % (subject, reason, outcome))
    return refuse


def _reflect(connection, support, name, refuse):
    """The table's columns and their domains; refuses what cannot be
    supported as a whole (missing, a view, no key, its storage)."""
    inspector = sa.inspect(connection)
    views = set(inspector.get_view_names())
    try:
        views |= set(inspector.get_materialized_view_names())
    except NotImplementedError:
        pass
    if name in views:
        refuse("%s is a view, not a table: sync the table it reads" % name)
    if not inspector.has_table(name):
        refuse("table %s does not exist" % name)
    reason = support.storage_refusal(connection, name)
    if reason:
        refuse("table %s %s" % (name, reason))
    columns = {c["name"]: c for c in inspector.get_columns(name)}
    if not _has_walkable_key(inspector, name, columns):
        refuse("table %s has no primary key and no unique key of NOT NULL "
               "columns; the backfill walks the table by its key. Add one "
               "in an earlier expand revision" % name)
    limits = support.text_limits(connection, name)
    domains = {n: _domain(connection, support, n, c, limits.get(n))
               for n, c in columns.items()}
    return _Table(name, columns, domains)


def _has_walkable_key(inspector, table, columns):
    if inspector.get_pk_constraint(table).get("constrained_columns"):
        return True
    for key in _unique_keys(inspector, table):
        if key and all(not columns[c]["nullable"] for c in key
                       if c in columns):
            return True
    return False


def _unique_keys(inspector, table):
    keys = [tuple(u["column_names"])
            for u in inspector.get_unique_constraints(table)]
    keys += [tuple(i["column_names"]) for i in inspector.get_indexes(table)
             if i.get("unique") and None not in i["column_names"]]
    return keys


def _is_unique(inspector, table, columns):
    pk = tuple(inspector.get_pk_constraint(table).get(
        "constrained_columns") or ())
    return tuple(columns) == pk or tuple(columns) in _unique_keys(
        inspector, table)


def _filled_by_database(inspector, table, name, info):
    """Whether an insert that omits the column still gives it a value."""
    if info.get("default") is not None or info.get("computed") or \
            info.get("identity") or info.get("autoincrement") is True:
        return True
    pk = inspector.get_pk_constraint(table).get("constrained_columns") or []
    return pk == [name] and isinstance(info["type"], sa.Integer)


def _require_columns(table, names, refuse):
    missing = [n for n in names if n not in table.columns]
    if missing:
        refuse("table %s has no column %s" % (
            table.name, ", ".join(missing)))


def _refuse_generated(table, names, refuse):
    """Both sides of a sync or copy are written by its triggers."""
    for name in names:
        if table.domains[name].generated:
            refuse("%s.%s is a generated column, which cannot be written "
                   "by the triggers" % (table.name, name))


def _domain(connection, support, name, column, limits):
    t = column["type"]
    try:
        type_sql = t.compile(dialect=connection.dialect)
    except Exception:  # a type the dialect cannot render back
        type_sql = str(type(t).__name__)
    base = dict(name=name, type_sql=type_sql,
                nullable=bool(column["nullable"]),
                generated=bool(column.get("computed")))
    charset, chars, max_bytes, per_char = limits or (None, None, None, None)
    visit = getattr(t, "__visit_name__", "")
    if isinstance(t, sa.Enum):
        return Domain(family="enum", values=tuple(t.enums or ()),
                      charset=charset, **base)
    if isinstance(t, sa.JSON):
        return Domain(family="json", charset=charset, chars=chars,
                      bytes=max_bytes, bytes_per_char=per_char, **base)
    if isinstance(t, (sa.types._Binary, sa.LargeBinary)):
        return Domain(family="binary", bytes=getattr(t, "length", None) or
                      max_bytes, **base)
    if isinstance(t, sa.String) and visit.upper() != "SET":
        return Domain(family="text", chars=t.length or chars,
                      bytes=max_bytes, charset=charset,
                      bytes_per_char=per_char, **base)
    if isinstance(t, sa.Boolean):
        return Domain(family="boolean", **base)
    if isinstance(t, sa.Integer):
        return Domain(family="integer", int_range=support.integer_range(t),
                      **base)
    if isinstance(t, sa.Float):
        return Domain(family="float", precision=getattr(t, "precision", None)
                      or (53 if isinstance(t, sa.Double) else None), **base)
    if isinstance(t, sa.Numeric):
        return Domain(family="decimal", precision=t.precision,
                      scale=t.scale, **base)
    if isinstance(t, sa.DateTime):
        return Domain(family="datetime", timezone=bool(t.timezone),
                      fraction=_fraction(t), **base)
    if isinstance(t, sa.Date):
        return Domain(family="date", **base)
    if isinstance(t, sa.Time):
        return Domain(family="time", timezone=bool(t.timezone),
                      fraction=_fraction(t), **base)
    if isinstance(t, sa.Uuid):
        return Domain(family="uuid", **base)
    return Domain(family="other", charset=charset, **base)


def _fraction(t):
    for attr in ("fsp", "precision"):
        value = getattr(t, attr, None)
        if isinstance(value, int):
            return value
    return None


# -- expressions
# ---------------------------------------------------------------
def _dialect_text(expression, dialect):
    if isinstance(expression, dict):
        return expression.get(dialect, expression.get("default", ""))
    return expression


def _references(text):
    return [field for _, field, _, _ in string.Formatter().parse(text)
            if field]


def _identity_source(text):
    """The column an expression copies unchanged (``{col}``), else None."""
    match = re.match(r"^\s*\{([A-Za-z_][A-Za-z0-9_]*)\}\s*$", text or "")
    return match.group(1) if match else None

