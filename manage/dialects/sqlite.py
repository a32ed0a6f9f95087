"""SQLite: the embedded default.

Column sync uses AFTER triggers, because SQLite triggers cannot assign to
``NEW``: the trigger body updates the row it fired for (found by ``rowid``).
With recursive triggers off (SQLite's default) that update does not fire the
same trigger again.  A conflicting write is rejected with ``RAISE(ABORT)``,
which rolls the statement back.

SQLite checks NOT NULL before AFTER triggers run, so during a transition the
column that one generation of code stops writing must be nullable.
"""

import contextlib
import fcntl
import os
import sqlite3
import time
import urllib.parse

from sqlalchemy import event

from manage import backup
from manage import column_sync
from manage.dialects import base, triggers
from manage.exceptions import ConfigError


def _quote(name):
    return '"%s"' % name.replace('"', '""')


#: Query options the pysqlite driver takes in an SQLite URL (``?timeout=5``;
#: with ``uri=true`` also SQLite's own URI parameters).
_URL_OPTIONS = {"timeout", "isolation_level", "detect_types",
                "check_same_thread", "cached_statements", "uri", "mode",
                "cache", "vfs", "immutable", "nolock", "psow", "modeof"}


class SQLiteSupport(base.DialectSupport):
    name = "sqlite"

    def is_transient(self, exc):
        return "database is locked" in str(getattr(exc, "orig", exc))

    def database_missing(self, url):
        path = url.database
        return bool(path) and path != ":memory:" and \
            not path.startswith("file:") and not os.path.exists(path)

    def check_url(self, url, text):
        """The folder of the file must exist; a ``?`` in the path is
        refused: SQLAlchemy reads what follows it as driver options, so
        ``sqlite:////srv/db?.sqlite`` would open ``/srv/db``."""
        path = url.database
        _, mark, options = str(text).partition("?")
        unknown = [part.split("=", 1)[0] for part in options.split("&")
                   if part.split("=", 1)[0] not in _URL_OPTIONS]
        if mark and unknown:
            raise ConfigError(
                "the SQLite path in [database] connection contains '?': "
                "what follows it (%s) is read as driver options, so %s "
                "would be opened instead; write ? in a file name as %%3F"
                % (options, path or "an in-memory database"))
        if not path or path == ":memory:" or path.startswith("file:"):
            return
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ConfigError("the folder of the SQLite database %s does not "
                              "exist" % path)

    @staticmethod
    def null_safe_equal(left, right, kind="text"):
        # IS compares with the left operand's collation (NOCASE, RTRIM...):
        # BINARY compares the bytes.
        return "((%s) COLLATE BINARY IS (%s) COLLATE BINARY)" % (left, right)

    def configure_engine(self, engine):
        # pysqlite does not BEGIN before DDL; take over transaction control so
        # that every revision (DDL and version bookkeeping) is atomic.
        @event.listens_for(engine, "connect")
        def _autocommit_driver(dbapi_connection, record):
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(connection):
            connection.exec_driver_sql("BEGIN")

    def prepare_ddl_session(self, connection, lock_wait_timeout):
        connection.exec_driver_sql(
            "PRAGMA busy_timeout = %d" % int(lock_wait_timeout * 1000))

    def is_lock_timeout(self, exc):
        return "database is locked" in str(getattr(exc, "orig", exc))

    # -- column sync triggers ----------------------------------------------
    def create_sync_sql(self, syncs, shape=None):
        group = column_sync.as_group(syncs)
        table = _quote(group.table)
        inserts, updates, changed = [], [], []
        for sync in group.syncs:
            insert, update, when = self._sync_statements(sync, table, shape)
            inserts.append(insert)
            updates.append(update)
            changed.append(when)
        insert_name, update_name = self.trigger_names(group.name)[:2]
        return [
            "CREATE TRIGGER %s AFTER INSERT ON %s FOR EACH ROW\nBEGIN\n%s"
            "END" % (_quote(insert_name), table, "".join(inserts)),
            "CREATE TRIGGER %s AFTER UPDATE OF %s ON %s FOR EACH ROW\n"
            "WHEN %s\nBEGIN\n%sEND" % (
                _quote(update_name),
                ", ".join(_quote(c) for c in group.columns()), table,
                " OR ".join(changed), "".join(updates)),
        ]

    @staticmethod
    def _row(shape, prefix="NEW."):
        """The condition that finds the row the trigger fired for."""
        if shape is None or not shape.key:
            return "rowid = %srowid" % prefix
        return " AND ".join("%s IS %s%s" % (_quote(c), prefix, _quote(c))
                            for c in shape.key)

    def _sync_statements(self, sync, table, shape):
        """One sync's statements in the insert and update trigger bodies.

        SQLite triggers cannot assign to NEW: each step is a statement on the
        stored row, guarded by conditions on NEW and OLD (the values of the
        application's write, which later steps do not change).
        """
        t = triggers.TriggerText(sync, self.name, _quote,
                                 self.null_safe_equal, shape)
        plain, new, old = t.ref(""), t.ref("NEW."), t.ref("OLD.")
        row = self._row(shape)

        def abort(message, condition):
            return ("  SELECT RAISE(ABORT, %s) FROM %s WHERE %s AND (%s);\n"
                    % (triggers.sql_string(message), table, row, condition))

        def update(assignments, condition):
            return "  UPDATE %s SET %s WHERE %s AND (%s);\n" % (
                table, assignments, row, condition)

        og, ng = t.any_given(sync.old, "NEW."), t.any_given(sync.new, "NEW.")
        both = "(%s) AND (%s)" % (og, ng)
        disagree = "%s AND NOT (%s)" % (both, t.consistent(new))
        old_defaults = t.only_defaults(sync.old, new)
        new_defaults = t.only_defaults(sync.new, new)
        # On insert, a side holding only its server defaults yields.
        take_new = "FALSE" if old_defaults is None else \
            "%s AND (%s)" % (disagree, old_defaults)
        take_old = "FALSE" if new_defaults is None else \
            "%s AND (%s) AND NOT (%s)" % (disagree, new_defaults, take_new)
        insert = []
        if t.rejects("both_sides"):
            insert.append(abort(t.conflict_message, "%s AND NOT (%s) AND "
                                "NOT (%s)" % (both, take_new, take_old)))
        insert += [
            abort(t.conflict_message, "%s AND NOT (%s) AND NOT (%s)" % (
                disagree, take_new, take_old)),
            update(t.assignments("old_to_new", plain, plain),
                   "((%s) AND NOT (%s)) OR (%s)" % (og, ng, take_old)),
            update(t.assignments("new_to_old", plain, plain),
                   "(NOT (%s) AND (%s)) OR (%s)" % (og, ng, take_new)),
        ]
        oc, nc = t.any_changed(sync.old), t.any_changed(sync.new)
        update_steps = []
        if t.rejects("both_sides"):
            update_steps.append(abort(t.conflict_message,
                                      "(%s) AND (%s)" % (oc, nc)))
        update_steps += [
            abort(t.conflict_message, "(%s) AND (%s) AND NOT (%s)" % (
                oc, nc, t.consistent(new))),
            update(t.assignments("old_to_new", plain, plain),
                   "(%s) AND NOT (%s) AND NOT (%s)" % (
                       oc, nc, t.consistent(plain))),
        ]
        if t.fills_partial_update():
            update_steps.append(update(", ".join(
                "%s = CASE WHEN %s THEN (%s) ELSE %s END" % (
                    plain(c), t.unchanged(c),
                    t.computed("old_to_new", c, old), plain(c))
                for c in sync.new),
                "NOT (%s) AND (%s) AND NOT (%s)" % (oc, nc,
                                                   t.consistent(old))))
        update_steps.append(update(
            t.assignments("new_to_old", plain, plain),
            "NOT (%s) AND (%s) AND NOT (%s)" % (oc, nc, t.consistent(plain))))
        if t.rejects("null"):
            synced = sync.old + sync.new
            insert.append(abort(t.null_message, t.any_null(synced, plain)))
            # Only when this sync's columns changed: the trigger is shared
            # by the table's syncs, and another sync's write leaves this
            # one's NULLs as they were.
            update_steps.append(abort(t.null_message, "((%s) OR (%s)) AND "
                                      "(%s)" % (oc, nc, t.any_null(
                                          synced, plain))))
        when = "(%s) OR (%s)" % (oc, nc)
        return "".join(insert), "".join(update_steps), when

    def trigger_names(self, name):
        return [name + "_ai", name + "_au", name + "_ad",
                name + "_tai", name + "_tau", name + "_tad"]

    def create_copy_sql(self, copy, shape=None):
        q = _quote
        same = self.null_safe_equal
        values = dict(table=q(copy.table), col=q(copy.column),
                      key=q(copy.key), target=q(copy.target),
                      tkey=q(copy.target_key), tcol=q(copy.target_column))
        values["differs"] = "NOT EXISTS (SELECT 1 FROM {target} WHERE " \
            "{tkey} = NEW.{key} AND {same})".format(
                same=same("{target}.{tcol}".format(**values),
                          "NEW.{col}".format(**values)), **values)
        values["back_differs"] = "NOT " + same(
            "{table}.{col}".format(**values), "NEW.{tcol}".format(**values))
        upsert = (
            "INSERT INTO {target} ({tkey}, {tcol}) SELECT NEW.{key}, "
            "NEW.{col} WHERE NEW.{col} IS NOT NULL AND {differs} "
            "ON CONFLICT ({tkey}) DO UPDATE SET {tcol} = excluded.{tcol}")
        names = self.trigger_names(copy.name)
        return [
            # Old code writes the old column: carried to the target table.
            ("CREATE TRIGGER {name} AFTER INSERT ON {table} FOR EACH ROW\n"
             "BEGIN\n  " + upsert + ";\nEND").format(
                 name=q(names[0]), **values),
            ("CREATE TRIGGER {name} AFTER UPDATE OF {col} ON {table} "
             "FOR EACH ROW WHEN NOT {same}\n"
             "BEGIN\n"
             "  DELETE FROM {target} WHERE {tkey} = NEW.{key} "
             "AND NEW.{col} IS NULL;\n  " + upsert + ";\nEND").format(
                 name=q(names[1]), same=same("NEW." + values["col"],
                                             "OLD." + values["col"]),
                 **values),
            # SQLite enforces foreign keys only when the application turns
            # them on: remove the copied row with its source row.
            ("CREATE TRIGGER {name} AFTER DELETE ON {table} FOR EACH ROW\n"
             "BEGIN\n  DELETE FROM {target} WHERE {tkey} = OLD.{key};\nEND"
             ).format(name=q(names[2]), **values),
            # New code writes the target table only: carried back.
            ("CREATE TRIGGER {name} AFTER INSERT ON {target} FOR EACH ROW\n"
             "BEGIN\n  UPDATE {table} SET {col} = NEW.{tcol} WHERE {key} = "
             "NEW.{tkey} AND {back_differs};\nEND").format(
                 name=q(names[3]), **values),
            ("CREATE TRIGGER {name} AFTER UPDATE OF {tkey}, {tcol} ON "
             "{target} FOR EACH ROW\nBEGIN\n"
             "  UPDATE {table} SET {col} = NULL WHERE {key} = OLD.{tkey} "
             "AND OLD.{tkey} IS NOT NEW.{tkey} AND {col} IS NOT NULL;\n"
             "  UPDATE {table} SET {col} = NEW.{tcol} WHERE {key} = "
             "NEW.{tkey} AND {back_differs};\nEND").format(
                 name=q(names[4]), **values),
            ("CREATE TRIGGER {name} AFTER DELETE ON {target} FOR EACH ROW\n"
             "BEGIN\n  UPDATE {table} SET {col} = NULL WHERE {key} = "
             "OLD.{tkey} AND {col} IS NOT NULL;\nEND").format(
                 name=q(names[5]), **values),
        ]

    def drop_sync_sql(self, table, name):
        return ["DROP TRIGGER IF EXISTS %s" % _quote(n)
                for n in self.trigger_names(name)]

    def list_sync_triggers(self, connection):
        rows = connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' "
            "AND name LIKE 'msync\\_%' ESCAPE '\\' ORDER BY name")
        return [r[0] for r in rows]

    # -- one run at a time -------------------------------------------------
    @contextlib.contextmanager
    def run_lock(self, engine, timeout, owner, describe_holder=None):
        """An exclusive lock on a file beside the database file."""
        path = engine.url.database
        if not path or path == ":memory:" or path.startswith("file:"):
            yield
            return
        lock_path = os.path.abspath(path) + ".manage-lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        base.raise_lock_held(timeout, os.pread(
                            fd, 512, 0).decode("utf-8", "replace").strip())
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, owner.encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # -- backups -----------------------------------------------------------
    backup_suffix = ".sqlite"
    backup_magics = (b"SQLite format 3\0",)
    backup_kind = "an SQLite database"

    def backup_name(self, engine):
        return os.path.splitext(os.path.basename(_file_of(engine)))[0]

    def backup(self, engine, path):
        """SQLite's online backup API: a consistent copy while others
        write."""
        source = _file_of(engine)
        if not os.path.isfile(source):
            raise ConfigError("nothing to back up: the SQLite database %s "
                              "does not exist" % source)
        _copy(source, path)

    def verify_backup(self, path):
        """``PRAGMA integrity_check`` reads every page of the file, opened
        read-only and immutable (no journal is created beside it)."""
        try:
            with contextlib.closing(sqlite3.connect(
                    "file:%s?mode=ro&immutable=1" % urllib.parse.quote(path),
                    uri=True)) as src:
                found = [r[0] for r in src.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            raise backup.damaged(path, "PRAGMA integrity_check: %s" % exc) \
                from None
        if found != ["ok"]:
            raise backup.damaged(path, "PRAGMA integrity_check: %s"
                                 % found[0])

    def restore(self, engine, path):
        """The backup API again, into the database: one write transaction
        on it, committed when the last page is copied; a failure, an
        interruption or a kill (SQLite's journal) leaves it as it was."""
        _copy(path, _file_of(engine))

    # -- the installed sync triggers (manage.verify) -------------------------
    def describe_sync_triggers(self, connection):
        """Name, table and the CREATE TRIGGER text SQLite keeps."""
        rows = connection.exec_driver_sql(
            "SELECT name, tbl_name, sql FROM sqlite_master "
            "WHERE type = 'trigger' AND name LIKE 'msync%'")
        return {r[0]: (r[1], r[2]) for r in rows if r[0].startswith("msync_")}

    # -- backfills (manage.datamigration.backfill) ---------------------------
    def insert_ignore_duplicates_sql(self, table, columns, rows_sql, key):
        """``INSERT ... SELECT ... ON CONFLICT (key) DO NOTHING``; the
        SELECT must have a WHERE clause (SQLite's upsert parsing)."""
        return "INSERT INTO %s (%s) %s ON CONFLICT (%s) DO NOTHING" % (
            _quote(table), ", ".join(_quote(c) for c in columns), rows_sql,
            ", ".join(_quote(c) for c in key))

    # -- table shapes (manage.shapes) ----------------------------------------
    def storage_refusal(self, connection, table):
        """Virtual tables (FTS, R*Tree, ...) cannot have triggers.  WITHOUT
        ROWID tables are supported: the triggers find rows by the primary
        key."""
        sql = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
            (table,)).scalar()
        if sql and sql.lstrip().upper().startswith("CREATE VIRTUAL"):
            return ("is a virtual table, on which SQLite allows no "
                    "triggers")
        return None

    def not_null_checked_before_triggers(self):
        """SQLite checks NOT NULL before AFTER triggers run (and has no
        BEFORE trigger that may assign NEW)."""
        return True


def _file_of(engine):
    path = engine.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        raise ConfigError("backups need an SQLite database file, not %r"
                          % (path or ":memory:"))
    return os.path.abspath(path)


def _copy(source, target):
    """Copy one SQLite database into another with the backup API, in steps
    of 256 pages: between steps Python handles signals (an interruption
    ends the copy, and the target's transaction is rolled back)."""
    with contextlib.closing(sqlite3.connect(source)) as src, \
            contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst, pages=256, progress=_between_steps)


def _between_steps(status, remaining, total):
    """The backup API's progress callback: Python code, so that a pending
    signal's handler runs (and may raise) between two steps."""
