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
import hashlib
import math
import os

from manage import backup
from manage import column_sync
from manage.dialects import base, triggers
from manage.exceptions import PrivilegeError

ER_LOCK_WAIT_TIMEOUT = 1205
ER_BINLOG_UNSAFE_ROUTINE = 1419
SIGNAL_MESSAGE_MAX = 128


def _quote(name):
    return "`%s`" % name.replace("`", "``")


def run_lock_name(database):
    """The GET_LOCK name of a database's run lock: at most 64 characters
    (MySQL's limit), distinct for every database name.  Short names stay
    readable (``manage.run.app``); a long one keeps its first 40 characters
    and a digest of the whole (two names sharing their first 53 characters
    once shared one lock)."""
    name = "manage.run.%s" % (database or "")
    if len(name) <= 64:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
    return "%s.%s" % (name[:40], digest)


def _threads_running(threshold):
    """A load check on Threads_running, not counting manage's own thread
    (what pt-online-schema-change watches)."""
    from manage.datamigration.throttle import LoadCheck

    class ThreadsRunning(LoadCheck):
        name = "Threads_running"

        def measure(self, connection):
            row = connection.exec_driver_sql(
                "SHOW GLOBAL STATUS LIKE 'Threads_running'").first()
            return None if row is None else int(row[1]) - 1
    return ThreadsRunning(threshold)


#: MySQL errors after which a retry may succeed: lock wait timeout, deadlock.
TRANSIENT_ERRORS = (1205, 1213)


class MySQLSupport(base.DialectSupport):
    name = "mysql"
    retry_scope = "statement"
    default_driver = "pymysql"

    def normalize_url(self, url):
        """PyMySQL speaks utf8mb4 unless told otherwise (its default would
        be latin1-sized utf8 on some servers)."""
        url = super().normalize_url(url)
        if url.drivername.startswith("mysql+pymysql") and \
                "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
        return url

    def is_transient(self, exc):
        code = getattr(getattr(exc, "orig", None), "args", (None,))[:1]
        return bool(code) and code[0] in TRANSIENT_ERRORS

    def load_checks(self, settings):
        """Threads_running above ``throttle_threads_running`` (0: off)."""
        if not settings.throttle_threads_running:
            return []
        return [_threads_running(settings.throttle_threads_running)]

    @staticmethod
    def null_safe_equal(left, right, kind="text"):
        if kind != "text":
            return "(%s) <=> (%s)" % (left, right)
        # <=> compares text by its collation ('a' = 'A' = 'a ' in the
        # defaults): compare the bytes, in one character set so that a
        # latin1 and a utf8mb4 column holding the same text agree.
        return ("(CAST(CONVERT(%s USING utf8mb4) AS BINARY) <=> "
                "CAST(CONVERT(%s USING utf8mb4) AS BINARY))" % (left, right))

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

    def prepare_data_session(self, connection):
        """Strict mode for this session: an expression that cannot convert
        a value (malformed JSON, truncation) fails instead of storing NULL.
        A trigger keeps the sql_mode it was created with, so triggers made
        on such a session are strict for every writer."""
        connection.exec_driver_sql(
            "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), "
            "'STRICT_ALL_TABLES', 'ERROR_FOR_DIVISION_BY_ZERO')")

    def value_warnings(self, connection, reading=False):
        # A read is not strict: an expression that cannot convert a value
        # (malformed JSON, a bad number) yields NULL with a warning, and a
        # NULL can look like agreement with an empty column.  Notes (level
        # "Note") are not about values and do not count for reads.
        return ["%s %s" % (row[1], row[2]) for row in connection.
                exec_driver_sql("SHOW WARNINGS LIMIT 20").all()
                if not (reading and str(row[0]).lower() == "note")][:3]

    def is_privilege_error(self, exc):
        return base.driver_errno(exc) == ER_BINLOG_UNSAFE_ROUTINE

    # -- column sync triggers ----------------------------------------------
    def trigger_names(self, name):
        # Syncs assign NEW before the write; copies need the row's id, so
        # they run after it; "_t*" are the copy's triggers on its target.
        return [name + "_bi", name + "_bu", name + "_ai", name + "_au",
                name + "_tai", name + "_tau", name + "_tad"]

    def create_copy_sql(self, copy, shape=None):
        """Both ways, without session state: each side writes the other
        only when the other differs, so that the chain a write starts ends
        at once (and MySQL's error 1442, a trigger writing to the table of
        the statement that fired it, is never reached)."""
        q = _quote
        same = self.null_safe_equal
        values = dict(table=q(copy.table), col=q(copy.column),
                      key=q(copy.key), target=q(copy.target),
                      tkey=q(copy.target_key), tcol=q(copy.target_column))
        v = dict(values)
        v["target_differs"] = (
            "NOT EXISTS (SELECT 1 FROM {target} WHERE {tkey} = NEW.{key} "
            "AND {same})").format(same=same(
                "{target}.{tcol}".format(**values),
                "NEW.{col}".format(**values)), **values)
        v["target_has"] = ("EXISTS (SELECT 1 FROM {target} WHERE {tkey} = "
                           "NEW.{key})").format(**values)
        v["source_differs"] = (
            "EXISTS (SELECT 1 FROM {table} WHERE {key} = NEW.{tkey} AND "
            "NOT {same})").format(same=same(
                "{table}.{col}".format(**values),
                "NEW.{tcol}".format(**values)), **values)
        v["upsert"] = ("INSERT INTO {target} ({tkey}, {tcol}) VALUES "
                       "(NEW.{key}, NEW.{col}) ON DUPLICATE KEY UPDATE "
                       "{tcol} = VALUES({tcol})").format(**values)
        v["set_back"] = ("UPDATE {table} SET {col} = NEW.{tcol} WHERE "
                         "{key} = NEW.{tkey}").format(**values)
        v["clear"] = ("IF EXISTS (SELECT 1 FROM {table} WHERE {key} = "
                      "OLD.{tkey} AND {col} IS NOT NULL) THEN UPDATE {table} "
                      "SET {col} = NULL WHERE {key} = OLD.{tkey}; END IF;"
                      ).format(**values)
        names = self.trigger_names(copy.name)
        return [
            ("CREATE TRIGGER {name} AFTER INSERT ON {table} FOR EACH ROW\n"
             "BEGIN\n"
             "  IF NEW.{col} IS NOT NULL AND {target_differs} THEN "
             "{upsert}; END IF;\n"
             "END").format(name=q(names[2]), **v),
            ("CREATE TRIGGER {name} AFTER UPDATE ON {table} FOR EACH ROW\n"
             "BEGIN\n"
             "  IF NOT {same} THEN\n"
             "    IF NEW.{col} IS NULL THEN\n"
             "      IF {target_has} THEN DELETE FROM {target} WHERE "
             "{tkey} = NEW.{key}; END IF;\n"
             "    ELSEIF {target_differs} THEN {upsert}; END IF;\n"
             "  END IF;\n"
             "END").format(name=q(names[3]), same=same(
                 "NEW." + values["col"], "OLD." + values["col"]), **v),
            ("CREATE TRIGGER {name} AFTER INSERT ON {target} FOR EACH ROW\n"
             "BEGIN\n"
             "  IF {source_differs} THEN {set_back}; END IF;\n"
             "END").format(name=q(names[4]), **v),
            ("CREATE TRIGGER {name} AFTER UPDATE ON {target} FOR EACH ROW\n"
             "BEGIN\n"
             "  IF NOT (OLD.{tkey} <=> NEW.{tkey}) THEN {clear} END IF;\n"
             "  IF {source_differs} THEN {set_back}; END IF;\n"
             "END").format(name=q(names[5]), **v),
            ("CREATE TRIGGER {name} AFTER DELETE ON {target} FOR EACH ROW\n"
             "BEGIN\n  {clear}\nEND").format(name=q(names[6]), **v),
        ]

    def create_sync_sql(self, syncs, shape=None):
        group = column_sync.as_group(syncs)
        blocks = [self._sync_blocks(sync, shape) for sync in group.syncs]
        insert, update = self.trigger_names(group.name)[:2]
        bodies = ["".join(b[0] for b in blocks), "".join(b[1] for b in blocks)]
        if not all(column_sync.is_identity(s) for s in group.syncs):
            bodies = [self._strict(group.table, b) for b in bodies]
        return [
            "CREATE TRIGGER %s BEFORE INSERT ON %s FOR EACH ROW\nBEGIN\n%s"
            "END" % (_quote(insert), _quote(group.table), bodies[0]),
            "CREATE TRIGGER %s BEFORE UPDATE ON %s FOR EACH ROW\nBEGIN\n%s"
            "END" % (_quote(update), _quote(group.table), bodies[1]),
        ]

    def _sync_blocks(self, sync, shape):
        """One sync's blocks in the insert and update trigger bodies."""
        t = triggers.TriggerText(sync, self.name, _quote,
                                 self.null_safe_equal, shape)
        new, old = t.ref("NEW."), t.ref("OLD.")

        def signal(message):
            return "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = %s" % (
                triggers.sql_string(message[:SIGNAL_MESSAGE_MAX]))
        conflict = signal(t.conflict_message)
        set_new = "SET " + t.assignments("old_to_new", new, new) + ";"
        set_old = "SET " + t.assignments("new_to_old", new, new) + ";"
        og, ng = t.any_given(sync.old, "NEW."), t.any_given(sync.new, "NEW.")
        old_defaults = t.only_defaults(sync.old, new)
        new_defaults = t.only_defaults(sync.new, new)
        disagreeing = ["    IF %s THEN DO 0;\n" % t.consistent(new)]
        if t.rejects("both_sides"):
            disagreeing[0] = "    IF FALSE THEN DO 0;\n"
        if old_defaults is not None:
            disagreeing.append("    ELSEIF %s THEN %s\n" % (old_defaults,
                                                            set_old))
        if new_defaults is not None:
            disagreeing.append("    ELSEIF %s THEN %s\n" % (new_defaults,
                                                            set_new))
        disagreeing.append("    ELSE %s;\n    END IF;\n" % conflict)
        insert = (
            "  IF ({og}) AND ({ng}) THEN\n{disagreeing}"
            "  ELSEIF {og} THEN {set_new}\n"
            "  ELSEIF {ng} THEN {set_old}\n"
            "  END IF;\n").format(og=og, ng=ng, set_new=set_new,
                                  set_old=set_old,
                                  disagreeing="".join(disagreeing))
        fill = ""
        if t.fills_partial_update():
            fill = "    IF NOT (%s) THEN\n%s    END IF;\n" % (
                t.consistent(old), "".join(
                    "      IF %s THEN SET %s = (%s); END IF;\n" % (
                        t.unchanged(c), new(c),
                        t.computed("old_to_new", c, old))
                    for c in sync.new))
        both = ("    %s;\n" % conflict) if t.rejects("both_sides") else (
            "    IF NOT (%s) THEN %s; END IF;\n" % (t.consistent(new),
                                                   conflict))
        update = (
            "  IF ({oc}) AND ({nc}) THEN\n{both}"
            "  ELSEIF ({oc}) THEN\n"
            "    IF NOT ({consistent}) THEN {set_new} END IF;\n"
            "  ELSEIF ({nc}) THEN\n{fill}"
            "    IF NOT ({consistent}) THEN {set_old} END IF;\n"
            "  END IF;\n").format(
                oc=t.any_changed(sync.old), nc=t.any_changed(sync.new),
                both=both, consistent=t.consistent(new), set_new=set_new,
                set_old=set_old, fill=fill)
        if t.rejects("null"):
            check = "  IF %s THEN %s; END IF;\n" % (
                t.any_null(sync.old + sync.new, new), signal(t.null_message))
            insert += check
            update += "  IF (%s) THEN\n  %s  END IF;\n" % (
                t.any_changed(sync.old + sync.new), check)
        return insert, update

    @staticmethod
    def _strict(table, block):
        """Refuse the write when the block's expressions left warnings.

        Strict mode makes a failed conversion an error only where a column
        is assigned; an expression in a condition (is the row consistent?)
        only warns and yields NULL.  The warnings the application's own
        statement left before are not counted: only those the block added.
        Syncs whose mappings are all the identity need no such check: a
        plain copy converts only by assignment, which strict mode guards.
        """
        prefix = "manage: cannot convert a value of %s: " % table
        return (
            "  BEGIN\n"
            "  DECLARE manage_before, manage_after INT DEFAULT 0;\n"
            "  DECLARE manage_reason VARCHAR(512);\n"
            "  GET DIAGNOSTICS manage_before = NUMBER;\n"
            "%s"
            "  GET DIAGNOSTICS manage_after = NUMBER;\n"
            "  IF manage_after > manage_before THEN\n"
            "    GET DIAGNOSTICS CONDITION manage_after manage_reason = "
            "MESSAGE_TEXT;\n"
            "    SET manage_reason = LEFT(CONCAT(%s, manage_reason), %d);\n"
            "    SIGNAL SQLSTATE '22000' SET MESSAGE_TEXT = manage_reason;\n"
            "  END IF;\n"
            "  END;\n" % (block, triggers.sql_string(prefix),
                          SIGNAL_MESSAGE_MAX))

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
        """``user`` as CURRENT_USER() gives it (``app@%``): the GRANT is
        written with the account quoted (``'app'@'%'``), as MySQL needs it
        to run when pasted."""
        if user and "@" in user:
            name, _, host = user.rpartition("@")
            user = "'%s'@'%s'" % (name.replace("'", "''"),
                                  host.replace("'", "''"))
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
        name = triggers.sql_string(run_lock_name(engine.url.database))
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
    backup_magics = (b"-- MariaDB dump", b"-- MySQL dump")
    backup_kind = "a MySQL/MariaDB dump made by manage"
    #: MySQL commits each DROP and CREATE TABLE at once.
    restore_is_atomic = False

    def backup(self, engine, path):
        """mariadb-dump/mysqldump in one consistent snapshot; the password
        goes in an option file that has no name in any folder, never on the
        command line.  The being-restored mark is not backed up."""
        tool = backup.find_tool(("mariadb-dump", "mysqldump"),
                                "the mariadb-client package")
        with backup.mysql_option_file(engine.url) as (fd, options):
            backup.run_tool([tool, "--defaults-extra-file=" + options,
                             "--single-transaction", "--triggers",
                             "--hex-blob", "--no-tablespaces",
                             "--default-character-set=utf8mb4",
                             "--ignore-table=%s.%s" % (engine.url.database,
                                                       backup.MARK_TABLE),
                             engine.url.database],
                            "backing up", stdout_path=path, pass_fds=(fd,))

    def verify_backup(self, path):
        """A complete dump ends with mysqldump's ``-- Dump completed``
        line (the checksum of the manifest covers the rest)."""
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            tail = f.read()
        if b"\n-- Dump completed" not in tail:
            raise backup.damaged(path, "it does not end as a complete dump "
                                 "does, with `-- Dump completed`")

    def restore(self, engine, path):
        """Drop every table and view (but the being-restored mark), load the
        dump, and drop the mark as the last statement, which the client
        reaches only if every statement before it succeeded."""
        tool = backup.find_tool(("mariadb", "mysql"),
                                "the mariadb-client package")
        with engine.connect() as conn:
            names = conn.exec_driver_sql(
                "SELECT table_name, table_type FROM information_schema.tables"
                " WHERE table_schema = DATABASE()").fetchall()
        drops = "".join("DROP %s IF EXISTS %s;\n" % (
            "VIEW" if kind == "VIEW" else "TABLE", _quote(name))
            for name, kind in sorted(names, key=lambda r: r[1] != "VIEW")
            if name != backup.MARK_TABLE)
        prefix = "SET FOREIGN_KEY_CHECKS = 0;\n%s" % drops
        suffix = "\nSET FOREIGN_KEY_CHECKS = 1;\nDROP TABLE %s;\n" % (
            _quote(backup.MARK_TABLE))
        with backup.mysql_option_file(engine.url) as (fd, options):
            backup.run_tool([tool, "--defaults-extra-file=" + options,
                             "--binary-mode", engine.url.database],
                            "restoring", stdin_path=path,
                            stdin_prefix=prefix.encode(),
                            stdin_suffix=suffix.encode(), pass_fds=(fd,))

    # -- the installed sync triggers (manage.verify) -------------------------
    def describe_sync_triggers(self, connection):
        """Name, table, and timing, event and body from
        information_schema.triggers."""
        rows = connection.exec_driver_sql(
            "SELECT trigger_name, event_object_table, action_timing, "
            "event_manipulation, action_statement "
            "FROM information_schema.triggers "
            "WHERE trigger_schema = DATABASE()")
        return {r[0]: (r[1], "%s %s %s" % (r[2], r[3], r[4]))
                for r in rows if r[0].startswith("msync_")}

    # -- backfills (manage.datamigration.backfill) ---------------------------
    def insert_ignore_duplicates_sql(self, table, columns, rows_sql, key):
        """``INSERT ... SELECT ... ON DUPLICATE KEY UPDATE k = k``: unlike
        INSERT IGNORE, it turns no other error into a warning.  A skipped
        row fires the table's update triggers, with no change."""
        first = "%s.%s" % (_quote(table), _quote(key[0]))
        return "INSERT INTO %s (%s) %s ON DUPLICATE KEY UPDATE %s = %s" % (
            _quote(table), ", ".join(_quote(c) for c in columns), rows_sql,
            first, first)

    # -- table shapes (manage.shapes) ----------------------------------------
    def storage_refusal(self, connection, table):
        """Engines without transactions (MyISAM, Aria, MEMORY, CSV, ...):
        a write and its trigger's work are not one atomic change, and a
        backfill batch cannot commit with its cursor."""
        row = connection.exec_driver_sql(
            "SELECT t.ENGINE, e.TRANSACTIONS FROM information_schema.TABLES t"
            " LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE "
            "WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME = %s",
            (table,)).first()
        if row is None or row[0] is None or row[1] == "YES":
            return None
        return ("uses the %s engine, which has no transactions: a write and "
                "the sync trigger's change to it would not be one atomic "
                "change, nor a backfill batch and its progress. Convert it "
                "first (ALTER TABLE %s ENGINE=InnoDB)" % (row[0], table))

    def text_limits(self, connection, table):
        """Character set and limits from information_schema: VARCHAR(n)
        counts characters, the TEXT types bytes."""
        rows = connection.exec_driver_sql(
            "SELECT c.COLUMN_NAME, c.CHARACTER_SET_NAME, "
            "c.CHARACTER_MAXIMUM_LENGTH, c.CHARACTER_OCTET_LENGTH, s.MAXLEN, "
            "c.DATA_TYPE FROM information_schema.COLUMNS c "
            "LEFT JOIN information_schema.CHARACTER_SETS s ON "
            "s.CHARACTER_SET_NAME = c.CHARACTER_SET_NAME "
            "WHERE c.TABLE_SCHEMA = DATABASE() AND c.TABLE_NAME = %s",
            (table,)).fetchall()
        limits = {}
        for name, charset, chars, octets, per_char, data_type in rows:
            if charset is None and octets is None:
                continue
            text_type = str(data_type).lower().endswith(("text", "blob"))
            limits[name] = (charset, None if text_type else chars,
                            octets, per_char)
        return limits

    def integer_range(self, sa_type):
        """TINYINT and MEDIUMINT too, and UNSIGNED."""
        bits = {"TINYINT": 8, "SMALLINT": 16, "MEDIUMINT": 24,
                "INTEGER": 32, "BIGINT": 64}.get(
                    str(getattr(sa_type, "__visit_name__", "")).upper())
        if bits is None:
            return super().integer_range(sa_type)
        if getattr(sa_type, "unsigned", False):
            return (0, 2 ** bits - 1)
        return (-2 ** (bits - 1), 2 ** (bits - 1) - 1)

    def refusal_outcome(self):
        """MySQL DDL is not transactional: earlier statements stay."""
        return ("MySQL commits each schema change at once, so what the "
                "revision did before this call stays (columns it added): "
                "fix the revision and run expand again; manage.ops."
                "add_column accepts a column already added as the revision "
                "says (drop it by hand if the fix changes it)")
