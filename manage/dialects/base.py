"""The contract every per-dialect module implements.

SQL generation (``create_sync_sql``, ``drop_sync_sql``) is kept apart from its
execution so that it can be tested and printed.  Behaviour that needs a live
connection (the run lock, bounded lock waits, privilege checks) takes one.
"""

import abc
import contextlib
import re
import time
from typing import List

from manage.exceptions import DataConversionError, LockHeldError
from manage.exceptions import UnsupportedDialectError


class DialectSupport(abc.ABC):
    """What manage needs from one kind of database."""

    name = None
    #: How a DDL statement that timed out waiting for a lock is retried:
    #: "transaction" (roll the revision back and run it again: databases
    #: with transactional DDL) or "statement" (run the statement again: it
    #: had no effect, and earlier statements are committed already).
    retry_scope = "transaction"

    # -- engines and sessions ----------------------------------------------
    #: The driver a bare URL of this dialect uses (``mysql://`` becomes
    #: ``mysql+pymysql://``); None: SQLAlchemy's default.
    default_driver = None

    def offline_url(self):
        """A URL for rendering SQL offline (lint, ``--sql``): only the
        dialect matters, nothing connects."""
        return "%s://" % (self.name if self.default_driver is None else
                          "%s+%s" % (self.name, self.default_driver))

    def normalize_url(self, url):
        """The parsed URL completed with what manage needs (this default:
        the default driver of a bare URL)."""
        if "+" not in url.drivername and self.default_driver:
            url = url.set(drivername="%s+%s" % (url.drivername,
                                                self.default_driver))
        return url

    def is_transient(self, exc):
        """Whether a failed statement (``sqlalchemy.exc.DBAPIError``) may
        succeed when its transaction is retried: a deadlock, a lock wait
        timeout, a serialization failure.  This default: no."""
        return False

    def load_checks(self, settings):
        """The engine's own load checks for the backfill's throttle
        (:class:`manage.datamigration.throttle.LoadCheck`), from the
        settings.  This default: none."""
        return []

    def database_missing(self, url):
        """Whether the database the URL names does not exist yet, where
        that can be told without connecting (an SQLite file); reading the
        version of a missing database must not create it."""
        return False

    def check_url(self, url, text):
        """Refuse, with :class:`~manage.exceptions.ConfigError`, what can be
        told wrong in a connection URL without connecting; ``url`` is the
        parsed ``sqlalchemy.engine.URL``, ``text`` the URL as configured.
        This default: nothing."""

    def engine_options(self):
        """Extra keyword arguments for sqlalchemy.create_engine."""
        return {}

    def configure_engine(self, engine):
        """Attach event listeners the dialect needs (optional)."""

    def prepare_ddl_session(self, connection, lock_wait_timeout):
        """Bound how long DDL on this connection waits for table locks."""

    def is_lock_timeout(self, exc):
        """Whether a DBAPI error means a lock wait timed out."""
        return False

    def is_privilege_error(self, exc):
        """Whether a DBAPI error means the user may not manage triggers."""
        return False

    @staticmethod
    def privilege_message(user):
        return "the database user %s may not create or drop triggers" % (
            user or "of [database] connection")

    # -- column sync triggers ----------------------------------------------
    @staticmethod
    @abc.abstractmethod
    def null_safe_equal(left, right, kind="text"):
        """SQL that is true when both values are equal byte for byte, or
        both NULL; never NULL itself.

        ``kind`` (:data:`manage.column_sync.KINDS`) is the kind of column
        the values belong to: ``text`` values are compared without their
        collation (a case-only, accent-only or trailing-space difference is
        a difference).
        """

    def consistent_sql(self, sync, column_ref, shape=None):
        """SQL that is true when one row's two sides of ``sync`` agree.

        Agreement is judged in the sync's check direction, byte for byte;
        a source side that is all NULL agrees only with an all-NULL target
        side.  ``column_ref(name)`` renders a column (for a plain query,
        the dialect's identifier quoting); ``shape`` is the table's
        :class:`manage.column_sync.TableShape` when known.
        """
        from manage.dialects.triggers import TriggerText
        return TriggerText(sync, self.name, column_ref, self.null_safe_equal,
                           shape).consistent(column_ref)

    @abc.abstractmethod
    def create_sync_sql(self, sync, shape=None):
        """Statements that create the triggers for a ColumnSync (or a group
        of one table's syncs); ``shape`` is the table's reflected
        :class:`manage.column_sync.TableShape` (None: unknown)."""

    @abc.abstractmethod
    def trigger_names(self, name):
        """Names of the triggers a sync or copy called ``name`` creates."""

    @abc.abstractmethod
    def create_copy_sql(self, copy, shape=None):
        """Statements that create the triggers for a ColumnCopy: both ways,
        so that old code may write the old column and new code the target
        table only.  ``shape`` is the source table's TableShape."""

    def drop_copy_sql(self, copy):
        """Statements that remove a ColumnCopy's triggers (on both tables);
        harmless when they are absent."""
        return self.drop_sync_sql(copy.table, copy.name)

    def check_foreign_triggers(self, connection, group):
        """Raise ShapeError when a trigger of the application's own on the
        group's table would change a synced column after the sync's
        trigger ran (the change would not be synced)."""

    def prepare_data_session(self, connection):
        """Make expressions on this connection fail instead of silently
        producing NULL or partial values (MySQL's strict mode); called on
        the connections that create triggers and run backfills."""

    def value_warnings(self, connection, reading=False) -> List[str]:
        """The warnings (``"CODE message"``, at most three) of the statement
        just run on ``connection`` about values an expression could not
        convert; ``reading``: the statement was a query (a count, a walk,
        a verification), whose unreadable values must not pass for NULL.
        Empty where the engine raises errors itself."""
        return []

    def raise_for_warnings(self, connection, doing, reading=False):
        """Raise DataConversionError if the statement just run on
        ``connection`` left :meth:`value_warnings`; ``doing`` says what
        ran."""
        warnings = self.value_warnings(connection, reading)
        if not warnings:
            return
        if reading:
            raise DataConversionError(
                "%s: the database could not read a value (%s), so the rows "
                "cannot be judged; correct the value in place"
                % (doing, "; ".join(warnings)))
        raise DataConversionError(
            "%s: the database could not convert a value (%s); nothing "
            "was changed by that statement" % (doing, "; ".join(warnings)))

    @abc.abstractmethod
    def drop_sync_sql(self, table, name):
        """Statements that remove the sync ``name`` of ``table``; harmless
        when its triggers are absent."""

    @abc.abstractmethod
    def list_sync_triggers(self, connection):
        """Names of the sync triggers present in the database."""

    def check_trigger_privileges(self, connection):
        """Raise PrivilegeError if triggers cannot be created or dropped."""

    # -- one run at a time -------------------------------------------------
    @contextlib.contextmanager
    def run_lock(self, engine, timeout, owner, describe_holder=None):
        """Hold the database-wide run lock for the block.

        Waits up to ``timeout`` seconds, then raises LockHeldError naming the
        holder (``describe_holder()`` tells who it is where the lock itself
        cannot).  ``owner`` describes this run.
        """
        yield

    # -- backups (shared parts in manage.backup) ---------------------------
    #: File name ending of this dialect's backups.
    backup_suffix = ".backup"
    #: Bytes one of which a backup file of this dialect starts with, and
    #: what such a file is called in a refusal.
    backup_magics = ()
    backup_kind = "a backup"
    #: Whether :meth:`restore` replaces the content in one transaction, so
    #: that a failure or an interruption leaves the database as it was.
    #: When False, manage marks the database as being restored first
    #: (:mod:`manage.backup`), and :meth:`restore` removes the mark as its
    #: last change.
    restore_is_atomic = True

    def backup_name(self, engine):
        """The database's name, for naming its backup files."""
        return engine.url.database

    def backup(self, engine, path):
        """Write a consistent copy of the database into ``path`` (an
        existing, empty, owner-only file)."""
        raise UnsupportedDialectError("backups of %s databases are not "
                                      "supported" % self.name)

    def verify_backup(self, path):
        """Read the whole backup in ``path`` as a restore would, without a
        database, and raise BackupError if it is incomplete or corrupt
        (:func:`manage.backup.damaged`).  The file's kind (its first bytes)
        was checked already."""

    def restore(self, engine, path):
        """Replace the database's content with the verified backup in
        ``path``: everything in the database's schema is dropped and the
        backup loaded, in one transaction where ``restore_is_atomic``."""
        raise UnsupportedDialectError("restores of %s databases are not "
                                      "supported" % self.name)

    # -- the installed sync triggers (manage.verify) -------------------------
    def describe_sync_triggers(self, connection):
        """The sync and copy triggers present, as ``{trigger name: (table,
        definition)}``: the table each is on and its definition as the
        catalog holds it (text that changes when the trigger, its function
        or its enabled state changes; None where it cannot be read).

        This default knows the names only (table and definition None).
        """
        return {name: (None, None)
                for name in self.list_sync_triggers(connection)}

    # -- backfills (manage.datamigration.backfill) ---------------------------
    def insert_ignore_duplicates_sql(self, table, columns, rows_sql, key):
        """One statement inserting the rows of ``rows_sql`` (a SELECT giving
        values for ``columns``, in order) into ``table``, skipping each row
        whose unique ``key`` columns (a subset of ``columns``) equal those
        of a row already there, or inserted meanwhile by another session:
        "insert unless a row with that key exists", without an error and
        without changing the existing row.  Names are unquoted; the
        statement's rowcount counts the rows inserted (MySQL may count a
        skipped row as 1)."""
        raise NotImplementedError

    # -- table shapes (manage.shapes) ----------------------------------------
    def storage_refusal(self, connection, table):
        """Why the storage of ``table`` cannot carry a sync or copy, as text
        that follows "table NAME" in the refusal (``"uses the MyISAM
        engine, ..."``), or None when it can.  The table exists."""
        return None

    def text_limits(self, connection, table):
        """What the reflected types of the table's text columns do not
        tell: ``{column: (character set, most characters, most bytes,
        bytes of the widest character)}``, any part None when unknown or
        unlimited.  This default: ``{}`` (one character set for the whole
        database; lengths as declared)."""
        return {}

    def integer_range(self, sa_type):
        """``(lowest, highest)`` value a reflected integer type holds, by
        its declared type (this default: SMALLINT, INTEGER, BIGINT)."""
        import sqlalchemy as sa
        if isinstance(sa_type, sa.BigInteger):
            return (-2 ** 63, 2 ** 63 - 1)
        if isinstance(sa_type, sa.SmallInteger):
            return (-2 ** 15, 2 ** 15 - 1)
        return (-2 ** 31, 2 ** 31 - 1)

    def refusal_outcome(self):
        """The sentence ending a refusal at expand: what the revision left
        behind (this default: nothing; its transaction is rolled back)."""
        return "Nothing was changed: the revision was rolled back"

    def not_null_checked_before_triggers(self):
        """Whether the engine checks NOT NULL before the sync triggers can
        fill a column an insert omitted (then old columns must be nullable
        or have a server default during the transition)."""
        return False


def raise_lock_held(timeout, holder="", describe_holder=None):
    """Give up on the run lock, naming its holder when that can be told."""
    if not holder and describe_holder is not None:
        holder = describe_holder()
    raise LockHeldError(lock_held_message(holder, timeout))


def lock_held_message(holder, timeout):
    """The refusal when another run holds the run lock."""
    who = " (%s)" % holder if holder else ""
    return ("another manage run%s holds the run lock of this database; "
            "gave up after waiting %gs. Let it finish, then run the "
            "command again" % (who, timeout))


def driver_errno(exc):
    """The driver's numeric error code of a (wrapped) DBAPI error."""
    orig = getattr(exc, "orig", exc)
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


_TABLE_PATTERNS = [
    re.compile(p, re.I | re.S) for p in (
        r"^\s*(?:ALTER|DROP|TRUNCATE|RENAME)\s+TABLE\s+(?:IF\s+EXISTS\s+)?"
        r"[`\"]?(\w+)",
        r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+.*?\s+ON\s+[`\"]?(\w+)",
        r"^\s*CREATE\s+TRIGGER\s+.*?\s+ON\s+[`\"]?(\w+)",
        r"^\s*DROP\s+TRIGGER\s+.*?\s+ON\s+[`\"]?(\w+)",
        r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+[`\"]?(\w+)",
    )]


def table_of(statement):
    """The table a DDL or DML statement works on, if it can be told."""
    for pattern in _TABLE_PATTERNS:
        match = pattern.search(statement or "")
        if match:
            return match.group(1)
    return None


@contextlib.contextmanager
def autocommit_connection(engine):
    """A connection outside any transaction, for session-level locks."""
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


RETRY_OPTION = "manage_lock_retry"


def install_statement_retry(engine, is_lock_timeout):
    """Retry single statements that timed out waiting for a lock.

    Active only on connections that carry the execution option
    ``manage_lock_retry = (retries, backoff seconds)``: the migration
    connection of a database whose DDL is not transactional.  A statement
    that timed out had no effect, so running it again is safe.
    """
    dialect = engine.dialect

    def retrying(original):
        def execute(cursor, statement, *args):
            context = args[-1] if args else None
            policy = getattr(context, "execution_options", {}).get(
                RETRY_OPTION) if context is not None else None
            if not policy:
                return original(cursor, statement, *args)
            retries, backoff = policy
            for attempt in range(retries + 1):
                try:
                    return original(cursor, statement, *args)
                except dialect.loaded_dbapi.Error as exc:
                    if attempt == retries or not is_lock_timeout(exc):
                        raise
                    time.sleep(backoff * (2 ** attempt))
        return execute

    dialect.do_execute = retrying(dialect.do_execute)
    dialect.do_execute_no_params = retrying(dialect.do_execute_no_params)
