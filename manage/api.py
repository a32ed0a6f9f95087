"""The library API: one Manager per database, one method per command.

Nothing here prints or exits; every method returns a result object or raises
a :class:`manage.exceptions.ManageError`.
"""

import contextlib
import dataclasses
import os
import socket
import time
from typing import List, Optional

import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc

from manage import database, dialects, run_context, version_table as vt
from manage.config import Settings
from manage.datamigration import loader
from manage.datamigration.runner import MigrateResult, Runner
from manage.dialects.base import RETRY_OPTION, table_of
from manage.exceptions import (DataMigrationError, ForeignDatabaseError,
                               LockTimeoutError, OutOfOrderError,
                               PrivilegeError, UnknownRevisionError)
from manage.repository import CONTRACT, EXPAND, Repository
from manage.status import BranchState, CompositeVersion, DataMigrationState

ALEMBIC_TABLE = "alembic_version"


@dataclasses.dataclass
class PhaseResult:
    """What expand or contract did."""
    branch: str
    applied: List[str]
    revision: Optional[str]


@dataclasses.dataclass
class SyncResult:
    expand: PhaseResult
    migrate: MigrateResult
    contract: PhaseResult


class Manager:
    """Upgrades one database with one migration repository."""

    def __init__(self, settings=None, repository=None, plugins=None):
        self.settings = settings or Settings()
        self.url = database.parse_url(self.settings.connection)
        self.repository = repository or Repository(self.settings.repository)
        if plugins is None:
            plugins = loader.load(self.settings.data_migration_namespace,
                                  self.settings.data_migrations)
        self.plugins = loader.ordered(plugins, self.repository.chain(EXPAND))
        self._engine = None

    # -- read-only ---------------------------------------------------------
    def version(self):
        """The composite version; never writes to the database."""
        if self._sqlite_file_missing():
            return self._composite({}, {}, None)
        with self._connect("reading the version") as conn:
            return self._inspect(conn, count_remaining=True)

    def check(self):
        return self.version()

    # -- the three phases --------------------------------------------------
    def expand(self):
        with self._run_lock():
            return self._expand(online=True)

    def migrate(self, max_count=None):
        with self._run_lock():
            return self._migrate(max_count)

    def contract(self):
        with self._run_lock():
            return self._contract(online=True)

    def sync(self):
        """Offline upgrade: expand, migrate, contract without triggers."""
        with self._run_lock():
            expanded = self._expand(online=False)
            migrated = self._migrate(None)
            contracted = self._contract(online=False)
            return SyncResult(expanded, migrated, contracted)

    def close(self):
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- phases, under the run lock ----------------------------------------
    def _expand(self, online):
        with self._connect("inspecting the database") as conn:
            composite = self._inspect(conn)
            if online:
                self._check_trigger_privileges(conn, composite.expand.pending)
        return self._upgrade(EXPAND, online)

    def _migrate(self, max_count):
        with self._connect("inspecting the database") as conn:
            composite = self._inspect(conn)
        if not composite.expand.at_head:
            raise OutOfOrderError(
                "data migrations need the expanded schema: the expand branch "
                "is at %s, not at its head %s; run `manage db expand` first"
                % (composite.expand.current or "<base>",
                   composite.expand.head))
        runner = Runner(self.engine, self.plugins, self.settings.batch_size,
                        self.settings.connection)
        with database.translate_errors(self.settings.connection,
                                       "recording data migration progress"):
            result = runner.run(max_count)
        if result.failures:
            raise DataMigrationError(
                "%d data migration(s) failed: %s" % (
                    len(result.failures), "; ".join(
                        "%s: %s" % (f.name, f.error)
                        for f in result.failures)), result.failures)
        return result

    def _contract(self, online):
        with self._connect("inspecting the database") as conn:
            composite = self._inspect(conn)
        if not composite.expand.at_head:
            raise OutOfOrderError(
                "contract refused: the expand branch is at %s, not at its "
                "head %s; run `manage db expand` first"
                % (composite.expand.current or "<base>",
                   composite.expand.head))
        pending = composite.pending_data_migrations
        if pending:
            raise OutOfOrderError(
                "contract refused: %d data migration(s) not done (%s); run "
                "`manage db migrate` first" % (len(pending), ", ".join(
                    "%s: %s" % (d.name, d.state) for d in pending)))
        self._verify_nothing_left(composite)
        with self._connect("inspecting the database") as conn:
            if self.support.list_sync_triggers(conn):
                self._check_trigger_privileges(conn,
                                               composite.contract.pending)
        return self._upgrade(CONTRACT, online)

    def _check_trigger_privileges(self, conn, revisions):
        """Refuse before any change if the triggers could not be managed."""
        if any(self.repository.manages_triggers(r) for r in revisions):
            self.support.check_trigger_privileges(conn)

    def _verify_nothing_left(self, composite):
        """Count again, do not trust: a migration marked done may have work
        again if old code wrote rows the triggers do not cover."""
        pending_contract = set(composite.contract.pending)
        left = []
        with self._connect("verifying the data migrations") as conn:
            for plugin in self.plugins:
                if plugin.after_revision and not (
                        self.repository.contracts_after(
                            plugin.after_revision) & pending_contract):
                    continue  # its contract ran: nothing of it is left
                remaining = int(plugin.pending(conn) or 0)
                if remaining:
                    left.append((plugin.name, remaining))
            if left:
                for name, remaining in left:
                    vt.upsert(conn, vt.DATA, name, state=vt.PENDING,
                              rows_remaining=remaining)
                conn.commit()
        if left:
            raise OutOfOrderError(
                "contract refused: rows still need migrating (%s), written "
                "after migrate ran; run `manage db migrate` first" % ", ".join("%s: %d" % item for item in left))

    def _upgrade(self, branch, online):
        """Upgrade a branch to its head, with bounded, retried lock waits."""
        applied = []

        def record(ctx, step, heads, run_args):
            applied.append(step.up_revision_id)

        context = run_context.RunContext(online=online,
                                         on_version_apply=[record])
        settings = self.settings
        attempts = 0
        while True:
            try:
                self._upgrade_once(branch, context)
                break
            except sa_exc.DBAPIError as exc:
                if self.support.is_privilege_error(exc):
                    raise PrivilegeError(self.support.privilege_message(
                        None)) from exc
                if not self.support.is_lock_timeout(exc):
                    raise
                retry_here = self.support.retry_scope == "transaction"
                if not retry_here or attempts >= settings.lock_retries:
                    raise self._lock_timeout(exc, branch, attempts) from exc
                time.sleep(settings.lock_retry_backoff * (2 ** attempts))
                attempts += 1
        return PhaseResult(branch, applied, self.repository.head(branch))

    def _upgrade_once(self, branch, context):
        with self._connect("upgrading the %s branch" % branch) as conn:
            with conn.begin():
                vt.ensure(conn)
            self.support.prepare_ddl_session(
                conn, self.settings.lock_wait_timeout)
            if self.support.retry_scope == "statement":
                conn = conn.execution_options(**{RETRY_OPTION: (
                    self.settings.lock_retries,
                    self.settings.lock_retry_backoff)})
            cfg = self.repository.alembic_config({
                "connection": conn, run_context.ATTR: context})
            command.upgrade(cfg, "%s@head" % branch)
            if conn.in_transaction():
                conn.commit()

    def _lock_timeout(self, exc, branch, retries):
        table = table_of(getattr(exc, "statement", "")) or "a table"
        return LockTimeoutError(
            "gave up on the %s branch: table %s stayed locked by another "
            "session for longer than %gs, %d time(s) (lock_wait_timeout, "
            "lock_retries). The revision was not applied; a long-running "
            "transaction in the application probably holds the table. Let it "
            "finish, then run the command again" % (
                branch, table, self.settings.lock_wait_timeout,
                max(retries, self.settings.lock_retries) + 1))

    # -- inspection ----------------------------------------------------------
    def _inspect(self, conn, count_remaining=False):
        """Read and validate the composite version; refuse unknown states."""
        inspector = sa.inspect(conn)
        tables = set(inspector.get_table_names())
        heads = []
        if ALEMBIC_TABLE in tables:
            heads = list(MigrationContext.configure(conn).get_current_heads())
        recorded = vt.read(conn, vt.DATA) if vt.TABLE_NAME in tables else {}
        unknown = [h for h in heads if not self.repository.knows(h)]
        if unknown:
            raise UnknownRevisionError(
                "the database is at revision %s, which this code does not "
                "know: it was upgraded by a newer release or belongs to "
                "another application. Downgrades are not supported; run the "
                "release that upgraded it" % ", ".join(sorted(unknown)))
        own = {ALEMBIC_TABLE, vt.TABLE_NAME}
        if not heads and not recorded and tables - own:
            raise ForeignDatabaseError(
                "the database holds tables (%s) but no version recorded by "
                "manage; it is not a database this tool created. Point "
                "[database] connection at the right database"
                % ", ".join(sorted(tables - own)[:5]))
        current = self.repository.positions(heads)
        return self._composite(current, recorded,
                               conn if count_remaining else None)

    def _composite(self, current, recorded, conn):
        branches = {}
        for branch in (EXPAND, CONTRACT):
            rev = current.get(branch)
            branches[branch] = BranchState(
                branch, rev, self.repository.head(branch),
                self.repository.pending(branch, rev))
        migrations = []
        for plugin in self.plugins:
            row = recorded.get(plugin.name) or {}
            state = DataMigrationState(
                plugin.name, row.get("state", vt.PENDING),
                row.get("rows_done") or 0, row.get("rows_remaining"),
                plugin.description, row.get("detail"))
            if state.done:
                state.rows_remaining = 0
            elif conn is not None and branches[EXPAND].at_head:
                state.rows_remaining = self._count_pending(plugin, conn)
            migrations.append(state)
        return CompositeVersion(branches[EXPAND], branches[CONTRACT],
                                migrations)

    @staticmethod
    def _count_pending(plugin, conn):
        try:
            return int(plugin.pending(conn) or 0)
        except sa_exc.SQLAlchemyError:
            conn.rollback()  # PostgreSQL: the failed query aborted it
            return None

    # -- connections -------------------------------------------------------
    @property
    def engine(self):
        if self._engine is None:
            self._engine = database.create_engine(self.settings.connection)
        return self._engine

    @contextlib.contextmanager
    def _connect(self, doing):
        with database.translate_errors(self.settings.connection, doing):
            with self.engine.connect() as conn:
                yield conn

    @property
    def support(self):
        return dialects.get(self.url.get_backend_name())

    @contextlib.contextmanager
    def _run_lock(self):
        """One run at a time; the holder is recorded for whoever waits."""
        owner = "host %s, pid %d" % (socket.gethostname(), os.getpid())
        with database.translate_errors(self.settings.connection,
                                       "taking the run lock"):
            with self.support.run_lock(self.engine,
                                       self.settings.run_lock_timeout, owner,
                                       self._lock_holder):
                with self._connect("inspecting the database") as conn:
                    self._inspect(conn)  # refuse before writing anything
                self._record_lock_holder(owner)
                try:
                    yield
                finally:
                    self._record_lock_holder(None)

    def _record_lock_holder(self, owner):
        """Note who holds the run lock, where manage's table already is."""
        with self.engine.connect() as conn:
            if vt.exists(conn):
                vt.upsert(conn, vt.LOCK, "run", state=vt.RUNNING if owner
                          else vt.DONE, detail=owner)
                conn.commit()

    def _lock_holder(self):
        try:
            with self.engine.connect() as conn:
                if vt.exists(conn):
                    row = vt.read(conn, vt.LOCK).get("run")
                    if row and row["state"] == vt.RUNNING:
                        return row["detail"]
        except sa_exc.SQLAlchemyError:
            pass
        return ""

    def _sqlite_file_missing(self):
        if self.url.get_backend_name() != "sqlite":
            return False
        path = self.url.database
        return bool(path) and path != ":memory:" and \
            not path.startswith("file:") and not os.path.exists(path)
