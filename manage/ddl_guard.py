"""Expand only adds, contract only removes: a guard on the DDL emitted.

A rolling upgrade is safe because old code keeps working while expand runs
(so expand must not drop or rename anything old code uses) and new code keeps
working while contract runs (so contract must not add anything new code would
need).  The guard enforces this on the SQL statements themselves, seen by a
SQLAlchemy ``before_cursor_execute`` listener on the migration connection,
so ``op.execute``, batch operations and helpers are all covered; and
:mod:`manage.lint` feeds it the SQL of an offline (``--sql``) run.

What is allowed besides the rule:

* manage's own bookkeeping tables (``alembic_version``, ``manage_version``);
* the sync triggers of :mod:`manage.ops` (names starting ``msync_``): expand
  drops and re-creates them;
* Alembic's batch table rebuild (``_alembic_tmp_<table>``): judged as one
  change of the table, by the columns the copy keeps or adds;
* a revision that states why it may break the rule, with a module-level
  sentence: ``ddl_rule_exception = "..."``.
"""

import contextlib
import dataclasses
import logging
import re
from typing import Optional, Tuple

import sqlalchemy as sa
from sqlalchemy import event

from manage.exceptions import ManageError, RepositoryError

LOG = logging.getLogger(__name__)

OWN_TABLES = frozenset(("alembic_version", "manage_version"))
SYNC_PREFIX = "msync_"
REBUILD_PREFIX = "_alembic_tmp_"
EXCEPTION_ATTR = "ddl_rule_exception"
FORBIDDEN = {"expand": ("drop", "rename"), "contract": ("create", "add")}
RULE = {"expand": "expand may only add: old code still runs against this "
                  "schema; move it to a contract revision",
        "contract": "contract may only remove: it runs after the new code "
                    "is deployed; move it to an expand revision"}
VERB = {"drop": "drops", "rename": "renames", "create": "creates",
        "add": "adds"}

OBJECT_TYPES = frozenset((
    "TABLE", "INDEX", "VIEW", "TRIGGER", "FUNCTION", "PROCEDURE", "SEQUENCE",
    "TYPE", "SCHEMA", "DATABASE", "EXTENSION", "EVENT", "DOMAIN", "RULE",
    "POLICY", "STATISTICS", "AGGREGATE", "COLLATION"))
CLAUSE_OBJECTS = frozenset((
    "COLUMN", "CONSTRAINT", "INDEX", "KEY", "UNIQUE", "PRIMARY", "FOREIGN",
    "CHECK", "FULLTEXT", "SPATIAL", "PARTITION", "PERIOD", "SYSTEM"))


class DDLRuleError(ManageError):
    """A revision emitted DDL its branch must not emit."""


@dataclasses.dataclass(frozen=True)
class Change:
    """What one statement does to the schema."""
    action: str                 # create | add | drop | rename | copy
    what: str                   # TABLE, INDEX, COLUMN, TRIGGER, ...
    name: Optional[str] = None
    table: Optional[str] = None
    columns: Tuple[str, ...] = ()


# -- reading SQL -------------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<skip>\s+|--[^\n]*|\#[^\n]*|/\*.*?\*/)
  | (?P<q>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])
  | (?P<s>'(?:[^'\\]|''|\\.)*')
  | (?P<w>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<p>.)""", re.S | re.X)


def _tokens(sql):
    """(kind, value): kind w (word), q (quoted name, unquoted), s, p."""
    out = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        if kind == "skip":
            continue
        value = m.group()
        if kind == "q":
            value = value[1:-1].replace(value[0] * 2, value[0]) \
                if value[0] != "[" else value[1:-1]
        out.append((kind, value))
    return out


def _kw(tokens, i):
    return tokens[i][1].upper() if i < len(tokens) and \
        tokens[i][0] == "w" else None


def _name(tokens, i):
    """A possibly qualified name at i: (last part, index after it)."""
    name = None
    while i < len(tokens) and tokens[i][0] in ("w", "q"):
        name = tokens[i][1]
        i += 1
        if i < len(tokens) and tokens[i] == ("p", "."):
            i += 1
        else:
            break
    return name, i


def _skip(tokens, i, *words):
    while _kw(tokens, i) in words:
        i += 1
    return i


def _split(tokens, start):
    """Top-level comma-separated parts of tokens[start:]."""
    parts, current, depth = [], [], 0
    for tok in tokens[start:]:
        if tok == ("p", "("):
            depth += 1
        elif tok == ("p", ")"):
            depth -= 1
        if tok == ("p", ",") and depth == 0:
            parts.append(current)
            current = []
        else:
            current.append(tok)
    parts.append(current)
    return [p for p in parts if p]


def _after(tokens, word, i=0):
    """The name following the keyword ``word`` (e.g. ON table)."""
    for j in range(i, len(tokens)):
        if _kw(tokens, j) == word:
            return _name(tokens, j + 1)[0]
    return None


def classify(sql):
    """The schema changes one SQL statement makes (empty for DML, SET...)."""
    tokens = _tokens(sql)
    head = _kw(tokens, 0)
    if head == "CREATE":
        return _create(tokens)
    if head == "DROP":
        return _drop(tokens)
    if head == "ALTER":
        return _alter(tokens)
    if head == "RENAME":       # MySQL: RENAME TABLE a TO b, c TO d
        return [Change("rename", "TABLE", _name(part, 0)[0],
                       _name(part, 0)[0])
                for part in _split(tokens, 2)]
    if head == "TRUNCATE":
        name = _name(tokens, _skip(tokens, 1, "TABLE", "ONLY"))[0]
        return [Change("drop", "ROWS", name, name)]
    if head == "INSERT" and _kw(tokens, 1) == "INTO":
        name, i = _name(tokens, 2)
        if name and name.startswith(REBUILD_PREFIX):
            return [Change("copy", "TABLE", name, name[len(REBUILD_PREFIX):],
                           _column_list(tokens, i))]
    return []


def _column_list(tokens, i):
    """Names in the parenthesised list at i (INSERT INTO t (a, b) ...)."""
    if i >= len(tokens) or tokens[i] != ("p", "("):
        return ()
    out, depth = [], 0
    for kind, value in tokens[i:]:
        if (kind, value) == ("p", "("):
            depth += 1
        elif (kind, value) == ("p", ")"):
            depth -= 1
            if depth == 0:
                break
        elif depth == 1 and kind in ("w", "q"):
            out.append(value)
    return tuple(out)


def _create(tokens):
    i = 1
    while i < len(tokens) and _kw(tokens, i) not in OBJECT_TYPES:
        i += 1
    what = _kw(tokens, i)
    if what is None:
        return []
    i = _skip(tokens, i + 1, "IF", "NOT", "EXISTS", "CONCURRENTLY")
    name, i = _name(tokens, i)
    if name is not None and name.upper() == "ON":   # CREATE INDEX ON t
        name, i = None, i - 1
    table = name if what == "TABLE" else None
    columns = ()
    if what in ("INDEX", "TRIGGER"):
        table = _after(tokens, "ON", i)
    elif what == "TABLE" and i < len(tokens) and tokens[i] == ("p", "("):
        columns = tuple(
            part[0][1] for part in _split(tokens[i + 1:], 0)
            if part[0][0] in ("w", "q") and not (
                part[0][0] == "w" and part[0][1].upper() in (
                    "CONSTRAINT", "PRIMARY", "UNIQUE", "FOREIGN", "CHECK",
                    "KEY", "INDEX", "FULLTEXT", "SPATIAL", "EXCLUDE")))
    return [Change("create", what, name, table, columns)]


def _drop(tokens):
    i = _skip(tokens, 1, "MATERIALIZED", "TEMPORARY", "FOREIGN")
    what = _kw(tokens, i)
    if what not in OBJECT_TYPES:
        return []
    i = _skip(tokens, i + 1, "IF", "EXISTS", "CONCURRENTLY")
    names, table = [], None
    for part in _split(tokens, i):
        name, j = _name(part, 0)
        names.append(name)
        table = table or _after(part, "ON", j)
    return [Change("drop", what, n, table if what != "TABLE" else n)
            for n in names]


def _alter(tokens):
    i = _skip(tokens, 1, "ONLINE", "OFFLINE", "IGNORE")
    what = _kw(tokens, i)
    i = _skip(tokens, i + 1, "ONLY", "IF", "EXISTS")
    name, i = _name(tokens, i)
    if what != "TABLE":
        words = {t[1].upper() for t in tokens[i:] if t[0] == "w"}
        if "RENAME" in words:
            return [Change("rename", what or "?", name)]
        if what == "TYPE" and _kw(tokens, i) == "ADD":
            return [Change("add", "VALUE", name)]
        return []
    changes = []
    for clause in _split(tokens, i):
        change = _alter_clause(clause, name)
        if change is not None:
            changes.append(change)
    return changes


def _alter_clause(clause, table):
    verb = _kw(clause, 0)
    if verb in ("ADD", "DROP"):
        what = _kw(clause, 1)
        if what in CLAUSE_OBJECTS:        # ADD CONSTRAINT x, DROP PRIMARY KEY
            j = _skip(clause, 1, *CLAUSE_OBJECTS)
            what = {"PRIMARY": "PRIMARY KEY", "FOREIGN": "FOREIGN KEY",
                    "KEY": "INDEX"}.get(what, what)
        else:                             # MySQL: ADD c INT, DROP c
            what, j = "COLUMN", 1
        name = _name(clause, _skip(clause, j, "IF", "NOT", "EXISTS"))[0]
        return Change("add" if verb == "ADD" else "drop", what, name, table)
    if verb == "RENAME":
        what = _kw(clause, 1)
        what = what if what in ("COLUMN", "INDEX", "KEY", "CONSTRAINT") \
            else "TABLE"
        return Change("rename", what, table if what == "TABLE" else
                      _name(clause, 2)[0], table)
    if verb == "CHANGE":           # MySQL: CHANGE [COLUMN] old new type
        j = _skip(clause, 1, "COLUMN", "IF", "EXISTS")
        old, j = _name(clause, j)
        new, _ = _name(clause, j)
        if old and new and old.lower() != new.lower():
            return Change("rename", "COLUMN", old, table)
    return None


# -- judging -----------------------------------------------------------------
def exception_reason(repository, revision):
    """The reason a revision states for breaking the rule, or None."""
    module = repository.script.get_revision(revision).module
    reason = getattr(module, EXCEPTION_ATTR, None)
    if reason is None:
        return None
    if not isinstance(reason, str) or len(reason.split()) < 3:
        raise RepositoryError(
            "revision %s sets %s without a reason: it must be a sentence "
            "saying why this revision may break the expand/contract rule"
            % (revision, EXCEPTION_ATTR))
    return reason.strip()


def _excerpt(sql, limit=120):
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class RuleChecker:
    """Judges statements revision by revision.

    ``revision_of()`` returns the revision now running; the branch of each
    revision (``expand`` or ``contract``) decides which rule applies.
    """

    def __init__(self, repository, revision_of):
        self.repository = repository
        self.revision_of = revision_of
        self.revision = None
        self.branch = None
        self.exempt = None
        self.rebuilds = {}

    def _begin(self, revision):
        self.revision = revision
        self.branch = self.repository.branch_of(revision) if revision \
            else None
        self.exempt = exception_reason(self.repository, revision) \
            if revision else None
        self.rebuilds = {}
        if self.exempt:
            LOG.info("revision %s is exempt from the %s rule: %s", revision,
                     self.branch, self.exempt)

    def violations(self, sql, connection=None):
        """Messages for what the statement does against the rule."""
        revision = self.revision_of()
        if revision != self.revision:
            self._begin(revision)
        if self.branch not in FORBIDDEN:
            return []
        out = []
        for change in classify(sql):
            bad = self._judge(change, connection)
            if bad is not None and not self.exempt:
                out.append(self._message(bad, sql))
        return out

    def check(self, sql, connection=None):
        found = self.violations(sql, connection)
        if found:
            raise DDLRuleError(found[0])

    def _judge(self, change, connection):
        """The offending Change, or None when the change is allowed."""
        forbidden = FORBIDDEN[self.branch]
        if OWN_TABLES & {change.name, change.table}:
            return None
        rebuilt = self._rebuild(change, connection)
        if rebuilt is not False:
            return rebuilt
        if change.action not in forbidden:
            return None
        if self.branch == "expand" and change.what in (
                "TRIGGER", "FUNCTION") and \
                (change.name or "").startswith(SYNC_PREFIX):
            return None
        return change

    def _rebuild(self, change, connection):
        """Judge the steps of an Alembic batch rebuild of a table.

        Returns False when the change is not part of a rebuild, else the
        offending Change or None.
        """
        name = change.name or ""
        if change.action == "create" and change.what == "TABLE" and \
                name.startswith(REBUILD_PREFIX):
            table = name[len(REBUILD_PREFIX):]
            self.rebuilds[table] = dict(
                columns=set(change.columns), copied=None, renamed=False,
                old=_columns(connection, table),
                indexes=_indexes(connection, table))
            return None
        if change.action == "drop" and change.what == "TABLE" and \
                name.startswith(REBUILD_PREFIX):
            return None     # a leftover copy of an earlier, failed rebuild
        if change.action == "copy" and change.table in self.rebuilds:
            rebuild = self.rebuilds[change.table]
            rebuild["copied"] = set(change.columns)
            added = sorted(rebuild["columns"] - rebuild["copied"])
            if added and self.branch == "contract":
                return Change("add", "COLUMN", ", ".join(added), change.table)
            return None
        if change.action == "drop" and change.what == "TABLE" and \
                name in self.rebuilds:
            if self.branch == "contract":
                return None
            rebuild = self.rebuilds[name]
            if rebuild["old"] is None:
                return Change("drop", "TABLE (rebuilt; its dropped columns "
                              "cannot be told offline)", name, name)
            lost = sorted(rebuild["old"] - rebuild["columns"])
            return Change("drop", "COLUMN", ", ".join(lost), name) \
                if lost else None
        if change.action == "rename" and name.startswith(REBUILD_PREFIX):
            rebuild = self.rebuilds.get(name[len(REBUILD_PREFIX):])
            if rebuild is not None:
                rebuild["renamed"] = True
                return None
        if change.action == "create" and change.what == "INDEX":
            rebuild = self.rebuilds.get(change.table)
            if rebuild and rebuild["renamed"] and (
                    rebuild["indexes"] is None or
                    change.name in rebuild["indexes"]):
                return None     # the rebuild restores the table's index
        return False

    def _message(self, change, sql):
        what = change.what.lower()
        target = change.name or ""
        if change.table and change.table != change.name:
            target = "%s.%s" % (change.table, target) if target \
                else change.table
        return ("%s revision %s %s %s %s: `%s`; %s, or state why it is safe "
                "with %s = \"...\" in the revision file"
                % (self.branch, self.revision, VERB[change.action], what,
                   target, _excerpt(sql), RULE[self.branch],
                   EXCEPTION_ATTR))


def _columns(connection, table):
    if connection is None:
        return None
    return {c["name"] for c in sa.inspect(connection).get_columns(table)}


def _indexes(connection, table):
    if connection is None:
        return None
    return {i["name"] for i in sa.inspect(connection).get_indexes(table)}


@contextlib.contextmanager
def watching(connection, checker):
    """Check every statement executed on the connection inside the block."""
    def before(conn, cursor, statement, parameters, context, executemany):
        checker.check(statement, conn)

    event.listen(connection, "before_cursor_execute", before)
    try:
        yield checker
    finally:
        event.remove(connection, "before_cursor_execute", before)
