"""The contract every per-dialect module implements.

SQL generation (``create_sync_sql``, ``drop_sync_sql``) is kept apart from its
execution so that it can be tested and printed.  Behaviour that needs a live
connection (the run lock, bounded lock waits, privilege checks) takes one.
"""

import abc
import contextlib


class DialectSupport(abc.ABC):
    """What manage needs from one kind of database."""

    name = None

    # -- engines and sessions ----------------------------------------------
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

    # -- column sync triggers ----------------------------------------------
    @staticmethod
    @abc.abstractmethod
    def null_safe_equal(left, right):
        """SQL that is true when both sides are equal or both NULL."""

    @abc.abstractmethod
    def create_sync_sql(self, sync):
        """Statements that create the triggers for a ColumnSync."""

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
    def run_lock(self, engine, timeout, owner):
        """Hold the database-wide run lock for the block (default: none)."""
        yield


def lock_held_message(holder, timeout):
    """The refusal when another run holds the run lock."""
    who = " (%s)" % holder if holder else ""
    return ("another manage run%s holds the run lock of this database; "
            "gave up after waiting %gs. Let it finish, then run the "
            "command again" % (who, timeout))
