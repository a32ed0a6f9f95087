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
import time

from manage import backup
from manage import column_sync
from manage.dialects import base, triggers


def _quote(name):
    return '"%s"' % name.replace('"', '""')


LOCK_NOT_AVAILABLE = "55P03"


class PostgreSQLSupport(base.DialectSupport):
    name = "postgresql"
    retry_scope = "transaction"

    @staticmethod
    def null_safe_equal(left, right):
        return "(%s) IS NOT DISTINCT FROM (%s)" % (left, right)

    def prepare_ddl_session(self, connection, lock_wait_timeout):
        connection.exec_driver_sql(
            "SET lock_timeout = '%dms'" % int(lock_wait_timeout * 1000))
        connection.commit()

    def is_lock_timeout(self, exc):
        orig = getattr(exc, "orig", exc)
        return getattr(orig, "sqlstate", None) == LOCK_NOT_AVAILABLE

    # -- column sync triggers ----------------------------------------------
    def trigger_names(self, name):
        return [name + "_trg"]

    def create_copy_sql(self, copy):
        q = _quote
        values = dict(table=q(copy.table), col=q(copy.column),
                      key=q(copy.key), target=q(copy.target),
                      tkey=q(copy.target_key), tcol=q(copy.target_column),
                      fn=q(self._function(copy.name)),
                      trg=q(self.trigger_names(copy.name)[0]))
        function = (
            "CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger "
            "LANGUAGE plpgsql AS $manage$\n"
            "BEGIN\n"
            "  IF TG_OP = 'UPDATE' AND NEW.{col} IS NOT DISTINCT FROM "
            "OLD.{col} THEN\n"
            "    RETURN NULL;\n"
            "  END IF;\n"
            "  IF NEW.{col} IS NULL THEN\n"
            "    DELETE FROM {target} WHERE {tkey} = NEW.{key};\n"
            "  ELSE\n"
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
        return [function, trigger]

    def create_sync_sql(self, syncs):
        group = column_sync.as_group(syncs)
        blocks = [self._sync_blocks(sync) for sync in group.syncs]
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

    def _sync_blocks(self, sync):
        """One sync's blocks in the insert and update branches."""
        t = triggers.TriggerText(sync, self.name, _quote,
                                 self.null_safe_equal)
        new_ref = lambda c: "NEW." + _quote(c)  # noqa: E731
        values = dict(
            raise_="RAISE EXCEPTION USING ERRCODE = '23514', MESSAGE = %s"
                   % triggers.sql_string(t.conflict_message),
            old_given=t.any_given(sync.old, "NEW."),
            new_given=t.any_given(sync.new, "NEW."),
            old_changed=t.any_changed(sync.old),
            new_changed=t.any_changed(sync.new),
            consistent=t.consistent(new_ref),
            set_new=self._assignments(t, "old_to_new", new_ref),
            set_old=self._assignments(t, "new_to_old", new_ref),
        )
        insert = (
            "    IF ({old_given}) AND ({new_given}) THEN\n"
            "      IF NOT ({consistent}) THEN {raise_}; END IF;\n"
            "    ELSIF {old_given} THEN {set_new}\n"
            "    ELSIF {new_given} THEN {set_old}\n"
            "    END IF;\n")
        update = (
            "    IF ({old_changed}) AND ({new_changed}) THEN\n"
            "      IF NOT ({consistent}) THEN {raise_}; END IF;\n"
            "    ELSIF ({old_changed}) THEN\n"
            "      IF NOT ({consistent}) THEN {set_new} END IF;\n"
            "    ELSIF ({new_changed}) THEN\n"
            "      IF NOT ({consistent}) THEN {set_old} END IF;\n"
            "    END IF;\n")
        return insert.format(**values), update.format(**values)

    @staticmethod
    def _assignments(t, direction, new_ref):
        sync = t.sync
        targets = sync.new if direction == "old_to_new" else sync.old
        return " ".join(
            "%s := (%s);" % (new_ref(c), sync.expression(
                direction, c, "postgresql", new_ref)) for c in targets)

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

    def backup(self, engine, path):
        """pg_dump in its custom format (one consistent snapshot); the
        password goes in a private PGPASSFILE."""
        tool = backup.find_tool(("pg_dump",), "the postgresql-client package")
        with backup.pg_environment(engine.url) as env:
            backup.run_tool([tool, "--format=custom", "--no-password"],
                            "backing up", stdout_path=path, env=env)

    def restore(self, engine, path):
        """Drop every object of the schema, then pg_restore the dump."""
        backup.check_backup_file(path, (b"PGDMP",),
                                 "a pg_dump custom-format backup")
        tool = backup.find_tool(("pg_restore",),
                                "the postgresql-client package")
        with engine.begin() as conn:
            for kind, name in conn.exec_driver_sql(_OBJECTS).fetchall():
                conn.exec_driver_sql("DROP %s IF EXISTS %s CASCADE"
                                     % (kind, name))
        with backup.pg_environment(engine.url) as env:
            backup.run_tool([tool, "--no-password", "--no-owner",
                             "--no-privileges", "--single-transaction",
                             "--exit-on-error", "--dbname",
                             engine.url.database, path],
                            "restoring", env=env)


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
