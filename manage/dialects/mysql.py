"""MySQL and MariaDB (through PyMySQL).

Column sync uses BEFORE INSERT and BEFORE UPDATE triggers that assign to
``NEW``; a conflicting write is rejected with SIGNAL.  With binary logging on
(as production has, and as Galera behaves) creating or dropping a trigger
needs SUPER or ``log_bin_trust_function_creators=1``: that is checked before
anything changes.

DDL is not transactional here, so a statement that times out waiting for its
metadata lock is retried by itself (it had no effect), with backoff; the
session's ``lock_wait_timeout`` bounds each wait so the application never
queues behind a waiting ALTER for longer.
"""

import contextlib
import math

from manage import backup
from manage import column_sync
from manage.dialects import base, triggers
from manage.exceptions import PrivilegeError

ER_LOCK_WAIT_TIMEOUT = 1205
ER_BINLOG_UNSAFE_ROUTINE = 1419
SIGNAL_MESSAGE_MAX = 128


def _quote(name):
    return "`%s`" % name.replace("`", "``")


class MySQLSupport(base.DialectSupport):
    name = "mysql"
    retry_scope = "statement"

    @staticmethod
    def null_safe_equal(left, right):
        return "(%s) <=> (%s)" % (left, right)

    # -- engines and sessions ----------------------------------------------
    def engine_options(self):
        return {"pool_pre_ping": True}

    def configure_engine(self, engine):
        base.install_statement_retry(engine, self.is_lock_timeout)

    def prepare_ddl_session(self, connection, lock_wait_timeout):
        seconds = max(1, int(math.ceil(lock_wait_timeout)))
        connection.exec_driver_sql(
            "SET SESSION lock_wait_timeout = %d" % seconds)
        connection.exec_driver_sql(
            "SET SESSION innodb_lock_wait_timeout = %d" % seconds)

    def is_lock_timeout(self, exc):
        return base.driver_errno(exc) == ER_LOCK_WAIT_TIMEOUT

    def is_privilege_error(self, exc):
        return base.driver_errno(exc) == ER_BINLOG_UNSAFE_ROUTINE

    # -- column sync triggers ----------------------------------------------
    def trigger_names(self, name):
        # Syncs assign NEW before the write; copies need the row's id, so
        # they run after it.
        return [name + "_bi", name + "_bu", name + "_ai", name + "_au"]

    def create_copy_sql(self, copy):
        q = _quote
        values = dict(table=q(copy.table), col=q(copy.column),
                      key=q(copy.key), target=q(copy.target),
                      tkey=q(copy.target_key), tcol=q(copy.target_column))
        upsert = ("INSERT INTO {target} ({tkey}, {tcol}) VALUES "
                  "(NEW.{key}, NEW.{col}) ON DUPLICATE KEY UPDATE "
                  "{tcol} = VALUES({tcol})").format(**values)
        insert_name, update_name = self.trigger_names(copy.name)[2:]
        return [
            ("CREATE TRIGGER {name} AFTER INSERT ON {table} FOR EACH ROW\n"
             "BEGIN\n"
             "  IF NEW.{col} IS NOT NULL THEN {upsert}; END IF;\n"
             "END").format(name=q(insert_name), upsert=upsert, **values),
            ("CREATE TRIGGER {name} AFTER UPDATE ON {table} FOR EACH ROW\n"
             "BEGIN\n"
             "  IF NOT (NEW.{col} <=> OLD.{col}) THEN\n"
             "    IF NEW.{col} IS NULL THEN\n"
             "      DELETE FROM {target} WHERE {tkey} = NEW.{key};\n"
             "    ELSE {upsert}; END IF;\n"
             "  END IF;\n"
             "END").format(name=q(update_name), upsert=upsert, **values),
        ]

    def create_sync_sql(self, syncs):
        group = column_sync.as_group(syncs)
        blocks = [self._sync_blocks(sync) for sync in group.syncs]
        insert, update = self.trigger_names(group.name)[:2]
        return [
            "CREATE TRIGGER %s BEFORE INSERT ON %s FOR EACH ROW\nBEGIN\n%s"
            "END" % (_quote(insert), _quote(group.table),
                     "".join(b[0] for b in blocks)),
            "CREATE TRIGGER %s BEFORE UPDATE ON %s FOR EACH ROW\nBEGIN\n%s"
            "END" % (_quote(update), _quote(group.table),
                     "".join(b[1] for b in blocks)),
        ]

    def _sync_blocks(self, sync):
        """One sync's blocks in the insert and update trigger bodies."""
        t = triggers.TriggerText(sync, self.name, _quote,
                                 self.null_safe_equal)
        new_ref = lambda c: "NEW." + _quote(c)  # noqa: E731
        message = t.conflict_message[:SIGNAL_MESSAGE_MAX]
        values = dict(
            signal="SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = %s"
                   % triggers.sql_string(message),
            old_given=t.any_given(sync.old, "NEW."),
            new_given=t.any_given(sync.new, "NEW."),
            old_changed=t.any_changed(sync.old),
            new_changed=t.any_changed(sync.new),
            consistent=t.consistent(new_ref),
            set_new="SET " + t.assignments("old_to_new", new_ref, new_ref),
            set_old="SET " + t.assignments("new_to_old", new_ref, new_ref),
        )
        insert = (
            "  IF ({old_given}) AND ({new_given}) THEN\n"
            "    IF NOT ({consistent}) THEN {signal}; END IF;\n"
            "  ELSEIF {old_given} THEN {set_new};\n"
            "  ELSEIF {new_given} THEN {set_old};\n"
            "  END IF;\n")
        update = (
            "  IF ({old_changed}) AND ({new_changed}) THEN\n"
            "    IF NOT ({consistent}) THEN {signal}; END IF;\n"
            "  ELSEIF ({old_changed}) THEN\n"
            "    IF NOT ({consistent}) THEN {set_new}; END IF;\n"
            "  ELSEIF ({new_changed}) THEN\n"
            "    IF NOT ({consistent}) THEN {set_old}; END IF;\n"
            "  END IF;\n")
        return insert.format(**values), update.format(**values)

    def drop_sync_sql(self, table, name):
        return ["DROP TRIGGER IF EXISTS %s" % _quote(n)
                for n in self.trigger_names(name)]

    def list_sync_triggers(self, connection):
        rows = connection.exec_driver_sql(
            "SELECT trigger_name FROM information_schema.triggers "
            "WHERE trigger_schema = DATABASE() "
            "AND trigger_name LIKE 'msync\\\\_%%' ORDER BY trigger_name")
        return [r[0] for r in rows]

    def check_trigger_privileges(self, connection):
        log_bin, trusted = connection.exec_driver_sql(
            "SELECT @@log_bin, @@log_bin_trust_function_creators").one()
        wsrep = connection.exec_driver_sql(
            "SHOW VARIABLES LIKE 'wsrep\\\\_on'").fetchall()
        galera = bool(wsrep) and str(wsrep[0][1]).upper() == "ON"
        if trusted or not (log_bin or galera):
            return
        grants = " ".join(r[0] for r in connection.exec_driver_sql(
            "SHOW GRANTS FOR CURRENT_USER()"))
        if "ALL PRIVILEGES ON *.*" in grants or \
                ("SUPER" in grants and "ON *.*" in grants):
            return
        user = connection.exec_driver_sql("SELECT CURRENT_USER()").scalar()
        raise PrivilegeError(self.privilege_message(user, galera))

    @staticmethod
    def privilege_message(user, galera=False):
        return (
            "the sync triggers cannot be created or dropped: binary logging "
            "is on%s and %s has no SUPER privilege (MySQL error 1419). Fix "
            "one of: GRANT SUPER ON *.* TO %s; or SET GLOBAL "
            "log_bin_trust_function_creators = 1%s. Then run the command "
            "again; nothing was changed"
            % (" (Galera)" if galera else "", user or "the user",
               user or "the user",
               " on every node" if galera else ""))

    # -- one run at a time -------------------------------------------------
    @contextlib.contextmanager
    def run_lock(self, engine, timeout, owner, describe_holder=None):
        name = triggers.sql_string(
            ("manage.run.%s" % (engine.url.database or ""))[:64])
        with base.autocommit_connection(engine) as conn:
            got = conn.exec_driver_sql(
                "SELECT GET_LOCK(%s, %.3f)" % (name, timeout)).scalar()
            if got != 1:
                base.raise_lock_held(timeout, describe_holder=describe_holder)
            try:
                yield
            finally:
                conn.exec_driver_sql("SELECT RELEASE_LOCK(%s)" % name)

    # -- backups -----------------------------------------------------------
    backup_suffix = ".sql"

    def backup(self, engine, path):
        """mariadb-dump/mysqldump in one consistent snapshot; the password
        goes in a private option file, never on the command line."""
        tool = backup.find_tool(("mariadb-dump", "mysqldump"),
                                "the mariadb-client package")
        with backup.mysql_option_file(engine.url) as options:
            backup.run_tool([tool, "--defaults-extra-file=" + options,
                             "--single-transaction", "--triggers",
                             "--hex-blob", "--no-tablespaces",
                             "--default-character-set=utf8mb4",
                             engine.url.database],
                            "backing up", stdout_path=path)

    def restore(self, engine, path):
        """Drop every table and view, then load the dump."""
        backup.check_backup_file(path, (b"-- MariaDB dump", b"-- MySQL dump"),
                                 "a MySQL/MariaDB dump made by manage")
        tool = backup.find_tool(("mariadb", "mysql"),
                                "the mariadb-client package")
        with engine.connect() as conn:
            names = conn.exec_driver_sql(
                "SELECT table_name, table_type FROM information_schema.tables"
                " WHERE table_schema = DATABASE()").fetchall()
        drops = "".join("DROP %s IF EXISTS %s;\n" % (
            "VIEW" if kind == "VIEW" else "TABLE", _quote(name))
            for name, kind in sorted(names, key=lambda r: r[1] != "VIEW"))
        prefix = "SET FOREIGN_KEY_CHECKS = 0;\n%s" % drops
        with backup.mysql_option_file(engine.url) as options:
            backup.run_tool([tool, "--defaults-extra-file=" + options,
                             "--binary-mode", engine.url.database],
                            "restoring", stdin_path=path,
                            stdin_prefix=prefix.encode())
