"""PostgreSQL (through psycopg 3).

Column sync uses one plpgsql trigger function per sync and a BEFORE INSERT
OR UPDATE trigger that calls it; a conflicting write is rejected with RAISE.
A non-superuser that owns the database can create both.

DDL is transactional: a revision that times out waiting for a lock
(``lock_timeout``) is rolled back whole, which releases every lock it took,
and retried after a backoff.  The run lock is a session advisory lock.
"""

import contextlib
import hashlib
import os
import re
import time

from manage import backup
from manage import column_sync
from manage.dialects import base, triggers
from manage.exceptions import DatabaseError, ShapeError


def _quote(name):
    return '"%s"' % name.replace('"', '""')


LOCK_NOT_AVAILABLE = "55P03"


#: SQLSTATEs after which a retry may succeed: serialization failure,
#: deadlock, lock not available.
TRANSIENT_SQLSTATES = ("40001", "40P01", "55P03")


class PostgreSQLSupport(base.DialectSupport):
    name = "postgresql"
    retry_scope = "transaction"
    default_driver = "psycopg"

    def is_transient(self, exc):
        return getattr(getattr(exc, "orig", None), "sqlstate",
                       None) in TRANSIENT_SQLSTATES

    @staticmethod
    def null_safe_equal(left, right, kind="text"):
        if kind != "text":
            return "((%s) IS NOT DISTINCT FROM (%s))" % (left, right)
        # As text in the "C" collation: a nondeterministic collation or
        # citext would call 'a' and 'A' equal.
        return ('(((%s)::text COLLATE "C") IS NOT DISTINCT FROM '
                '((%s)::text COLLATE "C"))' % (left, right))

    def prepare_ddl_session(self, connection, lock_wait_timeout):
        connection.exec_driver_sql(
            "SET lock_timeout = '%dms'" % int(lock_wait_timeout * 1000))
        connection.commit()

    def is_lock_timeout(self, exc):
        orig = getattr(exc, "orig", exc)
        return getattr(orig, "sqlstate", None) == LOCK_NOT_AVAILABLE

    # -- column sync triggers ----------------------------------------------
    def trigger_names(self, name):
        return [name + "_trg", name + "_back_trg"]

    def create_copy_sql(self, copy, shape=None):
        """Both ways: each side writes the other only when it differs, so
        the chain a write starts ends at once."""
        q = _quote
        same = self.null_safe_equal
        names = self.trigger_names(copy.name)
        values = dict(table=q(copy.table), col=q(copy.column),
                      key=q(copy.key), target=q(copy.target),
                      tkey=q(copy.target_key), tcol=q(copy.target_column),
                      fn=q(self._function(copy.name)),
                      back_fn=q(self._function(copy.name + "_back")),
                      trg=q(names[0]), back_trg=q(names[1]))
        values["target_differs"] = (
            "NOT EXISTS (SELECT 1 FROM {target} WHERE {tkey} = NEW.{key} "
            "AND {same})").format(same=same(
                "{target}.{tcol}".format(**values),
                "NEW.{col}".format(**values)), **values)
        values["unchanged"] = same("NEW." + values["col"],
                                   "OLD." + values["col"])
        values["source_differs"] = "NOT " + same(
            "{table}.{col}".format(**values), "NEW.{tcol}".format(**values))
        function = (
            "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger "
            "LANGUAGE plpgsql AS $manage$\n"
            "BEGIN\n"
            "  IF TG_OP = 'UPDATE' AND {unchanged} THEN\n"
            "    RETURN NULL;\n"
            "  END IF;\n"
            "  IF NEW.{col} IS NULL THEN\n"
            "    DELETE FROM {target} WHERE {tkey} = NEW.{key};\n"
            "  ELSIF {target_differs} THEN\n"
            "    INSERT INTO {target} ({tkey}, {tcol}) VALUES "
            "(NEW.{key}, NEW.{col}) ON CONFLICT ({tkey}) DO UPDATE SET "
            "{tcol} = EXCLUDED.{tcol};\n"
            "  END IF;\n"
            "  RETURN NULL;\n"
            "END\n"
            "$manage$").format(**values)
        trigger = ("CREATE TRIGGER {trg} AFTER INSERT OR UPDATE OF {col} ON "
                   "{table} FOR EACH ROW EXECUTE FUNCTION {fn}()"
                   ).format(**values)
        back_function = (
            "CREATE OR REPLACE FUNCTION {back_fn}() RETURNS trigger "
            "LANGUAGE plpgsql AS $manage$\n"
            "BEGIN\n"
            "  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND "
            "NEW.{tkey} IS DISTINCT FROM OLD.{tkey}) THEN\n"
            "    UPDATE {table} SET {col} = NULL WHERE {key} = OLD.{tkey} "
            "AND {col} IS NOT NULL;\n"
            "  END IF;\n"
            "  IF TG_OP <> 'DELETE' THEN\n"
            "    UPDATE {table} SET {col} = NEW.{tcol} WHERE {key} = "
            "NEW.{tkey} AND {source_differs};\n"
            "  END IF;\n"
            "  RETURN NULL;\n"
            "END\n"
            "$manage$").format(**values)
        back_trigger = (
            "CREATE TRIGGER {back_trg} AFTER INSERT OR DELETE OR UPDATE OF "
            "{tkey}, {tcol} ON {target} FOR EACH ROW EXECUTE FUNCTION "
            "{back_fn}()").format(**values)
        return [function, trigger, back_function, back_trigger]

    def drop_copy_sql(self, copy):
        names = self.trigger_names(copy.name)
        return ["DROP TRIGGER IF EXISTS %s ON %s" % (_quote(names[0]),
                                                     _quote(copy.table)),
                "DROP TRIGGER IF EXISTS %s ON %s" % (_quote(names[1]),
                                                     _quote(copy.target)),
                "DROP FUNCTION IF EXISTS %s()" % _quote(
                    self._function(copy.name)),
                "DROP FUNCTION IF EXISTS %s()" % _quote(
                    self._function(copy.name + "_back"))]

    def create_sync_sql(self, syncs, shape=None):
        group = column_sync.as_group(syncs)
        blocks = [self._sync_blocks(sync, shape) for sync in group.syncs]
        function = (
            "CREATE OR REPLACE FUNCTION %s() RETURNS trigger "
            "LANGUAGE plpgsql AS $manage$\n"
            "BEGIN\n"
            "  IF TG_OP = 'INSERT' THEN\n%s"
            "  ELSE\n%s"
            "  END IF;\n"
            "  RETURN NEW;\n"
            "END\n"
            "$manage$" % (_quote(self._function(group.name)),
                          "".join(b[0] for b in blocks),
                          "".join(b[1] for b in blocks)))
        trigger = (
            "CREATE TRIGGER %s BEFORE INSERT OR UPDATE ON %s FOR EACH ROW "
            "EXECUTE FUNCTION %s()" % (
                _quote(self.trigger_names(group.name)[0]),
                _quote(group.table), _quote(self._function(group.name))))
        return [function, trigger]

    def _sync_blocks(self, sync, shape):
        """One sync's blocks in the insert and update branches."""
        t = triggers.TriggerText(sync, self.name, _quote,
                                 self.null_safe_equal, shape)
        new, old = t.ref("NEW."), t.ref("OLD.")

        def raise_(message, code="23514"):
            return "RAISE EXCEPTION USING ERRCODE = '%s', MESSAGE = %s" % (
                code, triggers.sql_string(message))
        conflict = raise_(t.conflict_message)
        set_new = self._assignments(t, "old_to_new", new)
        set_old = self._assignments(t, "new_to_old", new)
        og, ng = t.any_given(sync.old, "NEW."), t.any_given(sync.new, "NEW.")
        old_defaults = t.only_defaults(sync.old, new)
        new_defaults = t.only_defaults(sync.new, new)
        disagreeing = ["      IF %s THEN NULL;\n" % (
            "FALSE" if t.rejects("both_sides") else t.consistent(new))]
        if old_defaults is not None:
            disagreeing.append("      ELSIF %s THEN %s\n" % (old_defaults,
                                                            set_old))
        if new_defaults is not None:
            disagreeing.append("      ELSIF %s THEN %s\n" % (new_defaults,
                                                            set_new))
        disagreeing.append("      ELSE %s;\n      END IF;\n" % conflict)
        insert = (
            "    IF ({og}) AND ({ng}) THEN\n{disagreeing}"
            "    ELSIF {og} THEN {set_new}\n"
            "    ELSIF {ng} THEN {set_old}\n"
            "    END IF;\n").format(og=og, ng=ng, set_new=set_new,
                                    set_old=set_old,
                                    disagreeing="".join(disagreeing))
        fill = ""
        if t.fills_partial_update():
            fill = "      IF NOT (%s) THEN\n%s      END IF;\n" % (
                t.consistent(old), "".join(
                    "        IF %s THEN %s := (%s); END IF;\n" % (
                        t.unchanged(c), new(c),
                        t.computed("old_to_new", c, old))
                    for c in sync.new))
        both = ("      %s;\n" % conflict) if t.rejects("both_sides") else (
            "      IF NOT (%s) THEN %s; END IF;\n" % (t.consistent(new),
                                                     conflict))
        update = (
            "    IF ({oc}) AND ({nc}) THEN\n{both}"
            "    ELSIF ({oc}) THEN\n"
            "      IF NOT ({consistent}) THEN {set_new} END IF;\n"
            "    ELSIF ({nc}) THEN\n{fill}"
            "      IF NOT ({consistent}) THEN {set_old} END IF;\n"
            "    END IF;\n").format(
                oc=t.any_changed(sync.old), nc=t.any_changed(sync.new),
                both=both, consistent=t.consistent(new), set_new=set_new,
                set_old=set_old, fill=fill)
        if t.rejects("null"):
            check = "    IF %s THEN %s; END IF;\n" % (
                t.any_null(sync.old + sync.new, new),
                raise_(t.null_message, "23502"))
            insert += check
            update += "    IF (%s) THEN\n  %s    END IF;\n" % (
                t.any_changed(sync.old + sync.new), check)
        return insert, update

    def check_foreign_triggers(self, connection, group):
        """PostgreSQL runs a table's BEFORE row triggers in name order: one
        of the application's that sorts after the sync's trigger and
        assigns a synced column of NEW would change it unseen."""
        group = column_sync.as_group(group)
        ours = self.trigger_names(group.name)[0]
        rows = connection.exec_driver_sql(
            "SELECT t.tgname, p.prosrc FROM pg_trigger t JOIN pg_proc p ON "
            "p.oid = t.tgfoid WHERE t.tgrelid = to_regclass(%(table)s) "
            "AND NOT t.tgisinternal AND t.tgtype & 3 = 3 "
            "AND t.tgname COLLATE \"C\" > %(ours)s COLLATE \"C\" "
            "AND t.tgname NOT LIKE 'msync\\_%%'",
            {"table": _quote(group.table), "ours": ours}).fetchall()
        for name, source in rows:
            for column in group.columns():
                if re.search(r'\bNEW\s*\.\s*"?%s"?\s*:?=' % re.escape(column),
                             source or "", re.I):
                    raise ShapeError(
                        "table %s has its own trigger %s, which PostgreSQL "
                        "runs after manage's sync trigger %s (triggers run in "
                        "name order) and which changes %s.%s: a value it "
                        "writes would not be synced. Rename it to sort before "
                        "%s, then run expand again; nothing was changed"
                        % (group.table, name, ours, group.table, column,
                           ours))

    @staticmethod
    def _assignments(t, direction, new_ref):
        sync = t.sync
        targets = sync.new if direction == "old_to_new" else sync.old
        return " ".join(
            "%s := (%s);" % (new_ref(c), t.computed(direction, c, new_ref))
            for c in targets)

    @staticmethod
    def _function(name):
        return name + "_fn"

    def drop_sync_sql(self, table, name):
        return ["DROP TRIGGER IF EXISTS %s ON %s" % (
                    _quote(self.trigger_names(name)[0]), _quote(table)),
                "DROP FUNCTION IF EXISTS %s()" % _quote(self._function(name))]

    def list_sync_triggers(self, connection):
        rows = connection.exec_driver_sql(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
            "AND tgname LIKE 'msync\\_%%' "
            "UNION SELECT proname FROM pg_proc "
            "WHERE pronamespace = current_schema()::regnamespace "
            "AND proname LIKE 'msync\\_%%' ORDER BY 1")
        return [r[0] for r in rows]

    # -- one run at a time -------------------------------------------------
    @contextlib.contextmanager
    def run_lock(self, engine, timeout, owner, describe_holder=None):
        name = "manage.run.%s" % (engine.url.database or "")
        key = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8],
                             "big", signed=True)
        with base.autocommit_connection(engine) as conn:
            deadline = time.monotonic() + timeout
            while not conn.exec_driver_sql(
                    "SELECT pg_try_advisory_lock(%d)" % key).scalar():
                if time.monotonic() >= deadline:
                    base.raise_lock_held(timeout,
                                         describe_holder=describe_holder)
                time.sleep(0.1)
            try:
                yield
            finally:
                conn.exec_driver_sql("SELECT pg_advisory_unlock(%d)" % key)

    # -- backups -----------------------------------------------------------
    backup_suffix = ".dump"
    backup_magics = (b"PGDMP",)
    backup_kind = "a pg_dump custom-format backup"

    def backup(self, engine, path):
        """pg_dump in its custom format (one consistent snapshot); the
        password goes in a PGPASSFILE that has no name in any folder."""
        tool = backup.find_tool(("pg_dump",), "the postgresql-client package")
        with backup.pg_environment(engine.url) as (env, fds):
            backup.run_tool([tool, "--format=custom", "--no-password"],
                            "backing up", stdout_path=path, env=env,
                            pass_fds=fds)

    def verify_backup(self, path):
        """pg_restore reads the whole file (every table's data) into
        /dev/null: a truncated or corrupt dump fails here, before any
        change."""
        tool = backup.find_tool(("pg_restore",),
                                "the postgresql-client package")
        try:
            backup.run_tool([tool, "--no-owner", "--no-privileges",
                             "--file", os.devnull, path],
                            "reading the backup")
        except DatabaseError as exc:
            raise backup.damaged(path, str(exc)) from None

    def restore(self, engine, path):
        """One transaction: psql runs ``BEGIN``, drops every object of the
        current schema, then runs the SQL pg_restore makes of the dump
        (``--single-transaction``: no COMMIT but its last line, not even
        around large objects), then manage's ``COMMIT``, sent only once
        pg_restore has finished without an error.  A failure, an
        interruption, or manage killed (psql then sees its input end
        without COMMIT) rolls everything back."""
        pg_restore = backup.find_tool(("pg_restore",),
                                      "the postgresql-client package")
        psql = backup.find_tool(("psql",), "the postgresql-client package")
        with engine.connect() as conn:
            objects = conn.exec_driver_sql(_OBJECTS).fetchall()
        drops = "".join("DROP %s IF EXISTS %s CASCADE;\n" % (kind, name)
                        for kind, name in objects)
        with backup.pg_environment(engine.url) as (env, fds):
            backup.run_tool(
                [psql, "--no-psqlrc", "--quiet", "--no-password",
                 "--set", "ON_ERROR_STOP=1"],
                "restoring", env=env, pass_fds=fds,
                stdin_prefix=("BEGIN;\n%s" % drops).encode(),
                stdin_tool=[[pg_restore, "--no-owner", "--no-privileges",
                             "--single-transaction", "--file", "-", path],
                            "reading the backup"],
                stdin_suffix=b"\nCOMMIT;\n")

    # -- the installed sync triggers (manage.verify) -------------------------
    def describe_sync_triggers(self, connection):
        """Name, table, and the trigger's definition, enabled state and
        its function's body, from the catalog of the current schema."""
        rows = connection.exec_driver_sql(
            "SELECT t.tgname, c.relname, pg_get_triggerdef(t.oid) || ' ' || "
            "t.tgenabled::text || ' ' || p.prosrc "
            "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE NOT t.tgisinternal "
            "AND c.relnamespace = current_schema()::regnamespace")
        return {r[0]: (r[1], r[2]) for r in rows if r[0].startswith("msync_")}

    # -- backfills (manage.datamigration.backfill) ---------------------------
    def insert_ignore_duplicates_sql(self, table, columns, rows_sql, key):
        """``INSERT ... SELECT ... ON CONFLICT (key) DO NOTHING``: a row
        another transaction inserted meanwhile is waited for, then
        skipped."""
        return "INSERT INTO %s (%s) %s ON CONFLICT (%s) DO NOTHING" % (
            _quote(table), ", ".join(_quote(c) for c in columns), rows_sql,
            ", ".join(_quote(c) for c in key))

    # -- table shapes (manage.shapes) ----------------------------------------
    def storage_refusal(self, connection, table):
        """Foreign tables: their rows live in another server, and the
        backfill's and the triggers' writes would not be one transaction
        with it.  Partitioned, unlogged and ordinary tables are supported
        (a partitioned table's row triggers are cloned to each partition,
        present and future)."""
        kind = connection.exec_driver_sql(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass(%(t)s)",
            {"t": _quote(table)}).scalar()
        if kind == "f":
            return ("is a foreign table: its rows live on another server, "
                    "outside the transactions of the sync triggers and the "
                    "backfill")
        return None


#: What a restore drops first: the objects of the current schema.
_OBJECTS = """
SELECT CASE relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                    WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
       oid::regclass::text
  FROM pg_class c WHERE relnamespace = current_schema()::regnamespace
   AND relkind IN ('v', 'm', 'r', 'p', 'S') AND %(own)s
UNION ALL
SELECT CASE prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
                    ELSE 'FUNCTION' END, oid::regprocedure::text
  FROM pg_proc c WHERE pronamespace = current_schema()::regnamespace
   AND %(own)s
UNION ALL
SELECT CASE typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, oid::regtype::text
  FROM pg_type c WHERE typnamespace = current_schema()::regnamespace
   AND typtype IN ('e', 'd') AND %(own)s
""" % {"own": "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid "
              "AND d.deptype = 'e')"}
