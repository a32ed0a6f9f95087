"""The library API: one Manager per database, one method per command.

Nothing here prints or exits; every method returns a result object or raises
a :class:`manage.exceptions.ManageError`.
"""

import contextlib
import dataclasses
import os
import signal
import socket
import time
from typing import Callable, List, Optional

import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc

from manage import (backup, database, ddl_guard, dialects, journal, lint,
                    run_context, sync_registry, verify,
                    version_table as vt)
from manage.config import Settings
from manage.datamigration import loader
from manage.datamigration.runner import MigrateResult, Runner, count_pending
from manage.dialects.base import RETRY_OPTION, table_of
from manage.exceptions import (BackupError, DatabaseError,
                               DataMigrationError, ForeignDatabaseError,
                               Interrupted, LockTimeoutError, ManageError,
                               OutOfOrderError, PluginError,
                               PrivilegeError,
                               UnknownRevisionError)
from manage.repository import CONTRACT, EXPAND, Repository
from manage.status import (BranchState, CompositeVersion,
                            DataMigrationState, SyncCheck)

ALEMBIC_TABLE = "alembic_version"


@dataclasses.dataclass
class PhaseResult:
    """What expand or contract did."""
    branch: str
    applied: List[str]
    revision: Optional[str]
    #: Syncs and copies whose triggers expand found missing or changed and
    #: re-created (manage.verify).
    repaired: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SyncResult:
    expand: PhaseResult
    migrate: MigrateResult
    contract: PhaseResult
    backup: Optional[str] = None


@dataclasses.dataclass
class RestoreResult:
    """What a restore did (and, while it runs, how far it got)."""
    path: str
    #: The backup of the database as it was before, or None.
    safety_backup: Optional[str] = None
    revisions_before: List[str] = dataclasses.field(default_factory=list)
    revisions_after: List[str] = dataclasses.field(default_factory=list)
    #: "verify", "safety backup", "restore" or "done".
    stage: str = "verify"
    #: Whether the database was marked as being restored.
    marked: bool = False
    #: Whether ``safety_backup`` was taken by this restore (not named by
    #: the mark of an earlier one).
    safety_taken: bool = False


def _owner():
    return "host %s, pid %d" % (socket.gethostname(), os.getpid())


def _signal_name(exc):
    return "Ctrl-C" if backup.signal_of(exc) == signal.SIGINT else \
        signal.Signals(backup.signal_of(exc)).name


class Manager:
    """Upgrades one database with one migration repository."""

    def __init__(self, settings=None, repository=None, plugins=None):
        self.settings = settings or Settings()
        self.url = database.validate(self.settings.connection)
        self.repository = repository or Repository(self.settings.repository)
        if plugins is None:
            plugins = loader.load(self.settings.data_migration_namespace,
                                  self.settings.data_migrations)
        self.plugins = loader.ordered(plugins, self.repository.chain(EXPAND))
        self._engine = None

    # -- read-only ---------------------------------------------------------
    def version(self):
        """The composite version; never writes to the database."""
        if self._database_missing():
            return self._composite({}, {}, None)
        with self._connect("reading the version") as conn:
            return self._inspect(conn, count_remaining=True)

    def check(self):
        return self.version()

    # -- the three phases --------------------------------------------------
    def expand(self):
        with self._run_lock():
            return self._expand(online=True)

    def migrate(self, max_count=None, observer=None, load_checks=()):
        """Run the pending data migrations in batches.

        ``observer`` (a :class:`manage.datamigration.progress.Observer`)
        hears of every batch; ``load_checks`` add
        :class:`manage.datamigration.throttle.LoadCheck` objects to the
        configured ones.
        """
        with self._run_lock():
            return self._migrate(max_count, observer, load_checks)

    def contract(self):
        with self._run_lock():
            return self._contract(online=True)

    def sync(self, backup_dir=None, on_backup=None):
        """Offline upgrade: expand, migrate, contract without triggers.

        With ``backup_dir``, a backup is taken first and its path handed to
        ``on_backup(path)`` before anything changes (None: nothing to back
        up yet, the SQLite file does not exist).
        """
        missing = self._database_missing()
        with self._run_lock():
            saved = None
            if backup_dir is not None:
                saved = None if missing else self._backup(backup_dir)
                if on_backup is not None:
                    on_backup(saved)
            expanded = self._expand(online=False)
            migrated = self._migrate(None, online=False)
            contracted = self._contract(online=False)
            return SyncResult(expanded, migrated, contracted, saved)

    # -- backups -----------------------------------------------------------
    def backup(self, directory: str) -> str:
        """Back up the database into a new owner-only file in ``directory``,
        with its manifest; returns its path.  Holds the run lock: no upgrade
        runs meanwhile.  Refused while the database is being restored."""
        with backup.interruptible():
            try:
                with self._run_lock(upgrade=False):
                    if not self._database_missing():
                        with self._connect("inspecting the database") as conn:
                            backup.refuse_if_restoring(conn)
                    return self._backup(directory)
            except KeyboardInterrupt as exc:
                raise Interrupted("backup interrupted by %s: no backup was "
                                  "written" % _signal_name(exc),
                                  backup.signal_of(exc)) from None

    def restore(self, path: str, safety_backup_dir: Optional[str] = None,
                safety_backup: bool = True, require_manifest: bool = True,
                other_database: bool = False,
                on_safety_backup: Optional[Callable[[str], None]] = None
                ) -> "RestoreResult":
        """Replace the database's content with a backup file.

        Before anything changes the whole backup is verified: its kind, its
        manifest (size, SHA-256, dialect, database, revisions known to this
        code) and a full read by the dialect.  Then, if the database holds
        tables, a safety backup of it is taken into ``safety_backup_dir``
        (default: the folder of ``path``) and handed to
        ``on_safety_backup(path)``, unless ``safety_backup`` is False.  The
        replacement is one transaction where the dialect allows
        (PostgreSQL, SQLite); elsewhere the database is marked as being
        restored until the load completes (:mod:`manage.backup`).

        ``require_manifest=False`` accepts a backup without a manifest;
        ``other_database=True`` one taken of another database.  Returns a
        :class:`RestoreResult`.
        """
        path = os.path.abspath(path)
        progress = RestoreResult(path)
        with backup.interruptible():
            try:
                with self._run_lock(upgrade=False):
                    self._restore(path, progress, safety_backup_dir,
                                  safety_backup, require_manifest,
                                  other_database, on_safety_backup)
            except KeyboardInterrupt as exc:
                raise Interrupted(self._interrupted_restore(exc, progress),
                                  backup.signal_of(exc)) from None
        return progress

    def _restore(self, path, result, safety_backup_dir, safety_backup,
                 require_manifest, other_database, on_safety_backup):
        support = self.support
        backup.check_backup_file(path, support.backup_magics,
                                 support.backup_kind)
        manifest = backup.read_manifest(path)
        if manifest is None and require_manifest:
            raise BackupError(
                "backup file %s has no manifest (%s): the backup did not "
                "finish, or was not made by `manage db backup`; nothing was "
                "restored. If you know it is complete, run `manage db "
                "restore --without-manifest %s`" % (
                    path, backup.manifest_path(path), path))
        if manifest is not None:
            backup.verify_manifest(path, manifest, support.name)
            self._check_backup_source(path, manifest, other_database)
        with database.translate_errors(self.settings.connection,
                                       "verifying %s" % path):
            support.verify_backup(path)
        missing = self._database_missing()
        mark, has_tables = None, False
        if not missing:
            with self._connect("inspecting the database") as conn:
                mark = backup.restoring_mark(conn)
                has_tables = bool(sa.inspect(conn).get_table_names())
                result.revisions_before = self._heads(conn)
        if mark is not None:
            result.safety_backup = mark.get("safety_backup")
        elif has_tables and safety_backup:
            result.stage = "safety backup"
            result.safety_backup = self._backup(
                safety_backup_dir or os.path.dirname(path))
            result.safety_taken = True
            if on_safety_backup is not None:
                on_safety_backup(result.safety_backup)
        with database.translate_errors(self.settings.connection,
                                       "restoring %s" % path):
            result.stage = "restore"
            if not support.restore_is_atomic:
                result.marked = True
                backup.mark_restoring(self.engine, path,
                                      result.safety_backup, _owner())
            try:
                support.restore(self.engine, path)
            except DatabaseError as exc:
                if result.marked:
                    raise self._put_back(exc, result) from exc
                raise DatabaseError("%s; nothing was restored: the database "
                                    "is as it was" % exc) from exc
            result.stage = "done"
        with self._connect("reading the version") as conn:
            backup.refuse_if_restoring(conn)  # the load ended without its end
            result.revisions_after = self._heads(conn)

    def _put_back(self, exc: DatabaseError,
                  result: "RestoreResult") -> DatabaseError:
        """A load failed part-way on a database marked as being restored:
        load the safety backup this restore took, so that the database is
        as it was (its load drops the mark).  Returns the error to raise:
        what the database holds now."""
        if result.safety_taken:
            result.stage = "putting back"
            try:
                self.support.verify_backup(result.safety_backup)
                self.support.restore(self.engine, result.safety_backup)
            except ManageError:
                pass  # still marked: say so below
            else:
                result.stage = "put back"
                return DatabaseError(
                    "%s; nothing was restored: the database was put back as "
                    "it was, from the safety backup %s"
                    % (exc, result.safety_backup))
        mark = self._mark()
        text = backup.unfinished_restore_message(
            mark, "nothing is lost, but " if mark.get("safety_backup")
            else "")
        return DatabaseError("%s. %s%s" % (exc, text[:1].upper(), text[1:]))

    def _mark(self) -> dict:
        """The being-restored mark ({} when there is none)."""
        with self._connect("reading the restore mark") as conn:
            return backup.restoring_mark(conn) or {}

    def _check_backup_source(self, path, manifest, other_database):
        """Refuse a backup of another database (unless told) or holding a
        revision this code does not know."""
        name = self.support.backup_name(self.engine)
        if manifest.database != name and not other_database:
            raise BackupError(
                "%s is a backup of the database %s, not of %s; nothing was "
                "restored. To copy its content into %s, run `manage db "
                "restore --other-database %s`" % (
                    path, manifest.database, name, name, path))
        unknown = [r for r in manifest.revisions
                   if not self.repository.knows(r)]
        if unknown:
            raise BackupError(
                "%s holds revision %s, which this code does not know: it was "
                "taken from a newer release or another application; nothing "
                "was restored. Restore it with the release that made it"
                % (path, ", ".join(sorted(unknown))))

    def _interrupted_restore(self, exc: BaseException,
                             result: "RestoreResult") -> str:
        """What an interrupted restore left, in words."""
        by = "restore interrupted by %s" % _signal_name(exc)
        if result.stage in ("restore", "putting back") and result.marked:
            try:
                mark = self._mark()
            except ManageError:
                mark = {"backup_file": result.path,
                        "safety_backup": result.safety_backup}
            return "%s: %s" % (by, backup.unfinished_restore_message(mark))
        if result.stage == "restore":
            return ("%s: nothing was restored: its transaction was rolled "
                    "back, the database is as it was" % by)
        return "%s before it changed anything: the database is as it was" % by

    @staticmethod
    def _heads(conn) -> List[str]:
        """The Alembic heads recorded in the database, sorted."""
        if ALEMBIC_TABLE not in sa.inspect(conn).get_table_names():
            return []
        return sorted(MigrationContext.configure(conn).get_current_heads())

    def _backup(self, directory):
        with database.translate_errors(self.settings.connection,
                                       "backing up"):
            path = backup.new_backup_file(
                directory, self.support.backup_name(self.engine),
                self.support.backup_suffix)
            try:
                self.support.backup(self.engine, path)
                with self._connect("reading the version") as conn:
                    revisions = self._heads(conn)
                backup.write_manifest(path, self.support.name,
                                      self.support.backup_name(self.engine),
                                      revisions)
            except BaseException:
                manifest = backup.manifest_path(path)
                backup.remove_quietly(path, manifest, manifest + ".partial")
                raise
        return path

    def lint(self, dialect_names=None):
        """Check the repository's revisions offline (no database)."""
        return lint.check(self.repository, dialect_names)

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
        result = self._upgrade(EXPAND, online)
        if online:
            result.repaired = self._repair_syncs()
            with self._connect("reading the column syncs") as conn:
                result.repaired = sorted(set(result.repaired) | {
                    e.name for e in sync_registry.read(conn)
                    if e.repaired_after in result.applied})
        return result

    def _repair_syncs(self):
        """Re-create the recorded syncs and copies whose triggers are not
        as expand made them (a table rebuilt since); their names."""
        with database.translate_errors(self.settings.connection,
                                       "re-creating the sync triggers"):
            with self.engine.connect() as conn:
                self.support.prepare_ddl_session(
                    conn, self.settings.lock_wait_timeout)
                if conn.in_transaction():
                    conn.commit()  # session settings stay
                with conn.begin():
                    return verify.repair(conn, self.support,
                                         sync_registry.read(conn))

    def _migrate(self, max_count, observer=None, load_checks=(),
                 online=True):
        with self._connect("inspecting the database") as conn:
            composite = self._inspect(conn)
            self._require_expanded(composite, "data migrations need the "
                                   "expanded schema")
            if online:
                verify.require_installed(conn, self.support, "migrate")
        runner = Runner(self.engine, self.plugins, self.settings, observer,
                        load_checks, recount=self._counts_live(
                            composite.contract.pending, composite.steps))
        with database.translate_errors(self.settings.connection,
                                       "recording data migration progress"):
            result = runner.run(max_count)
            runner.transaction(lambda conn: journal.finish_data_steps(
                conn, result.outcomes))
        if result.failures:
            raise DataMigrationError(
                "%d data migration(s) failed: %s" % (
                    len(result.failures), "; ".join(
                        "%s: %s" % (f.name, f.error)
                        for f in result.failures)), result.failures)
        return result

    @staticmethod
    def _require_expanded(composite, refusal):
        if not composite.expand.at_head:
            raise OutOfOrderError(
                "%s: the expand branch is at %s, not at its head %s; run "
                "`manage db expand` first" % (
                    refusal, composite.expand.current or "<base>",
                    composite.expand.head))

    def _contract(self, online):
        with self._connect("inspecting the database") as conn:
            composite = self._inspect(conn)
        self._require_expanded(composite, "contract refused")
        pending = composite.pending_data_migrations
        if pending:
            raise OutOfOrderError(
                "contract refused: %d data migration(s) not done (%s); run "
                "`manage db migrate` first" % (len(pending), ", ".join(
                    "%s: %s" % (d.name, d.state) for d in pending)))
        self._verify_nothing_left(composite)
        self._verify_syncs(composite, online)
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
        live = self._counts_live(composite.contract.pending, composite.steps)
        left = []
        with self._connect("verifying the data migrations") as conn:
            for plugin in self.plugins:
                if not live(plugin):
                    continue  # its contract ran: nothing of it is left
                try:
                    remaining = count_pending(plugin, conn)
                except Exception as exc:
                    raise PluginError(
                        "contract refused: data migration %s could not count "
                        "its pending rows: %s; nothing was changed" % (
                            plugin.name, database.describe_exception(
                                exc, self.settings.connection))) from None
                if remaining:
                    left.append((plugin.name, remaining))
        if left:
            with self.engine.begin() as conn:  # see _record_lock_holder
                for name, remaining in left:
                    vt.upsert(conn, vt.DATA, name, state=vt.PENDING,
                              rows_remaining=remaining)
            raise OutOfOrderError(
                "contract refused: rows still need migrating (%s), written "
                "after migrate ran; run `manage db migrate` first"
                % ", ".join("%s: %d" % item for item in left))

    def _verify_syncs(self, composite, online):
        """Before contract: every recorded sync installed (online), and
        every row of the syncs and copies the pending contract revisions
        remove agreeing, byte for byte.  Raises before anything changes."""
        with self._connect("verifying the column syncs") as conn:
            if online:
                verify.require_installed(conn, self.support, "contract")
            counts = [(t, self._count_disagreeing(conn, t))
                      for t in self._sync_targets(conn, composite)]
        verify.require_consistent([(t, c) for t, c in counts
                                   if c is not None])

    def _sync_targets(self, conn, composite, entries=None):
        """The syncs and copies a pending contract revision removes: the
        registry's, and those the data migrations and the pending contract
        revisions declare (an offline sync recorded none)."""
        if entries is None:
            entries = sync_registry.read(conn)
        begun = {s.name for s in composite.steps if s.phase == CONTRACT}
        pending = [r for r in composite.contract.pending if r not in begun]
        applied = self.repository.chain(EXPAND)
        if composite.expand.current in applied:
            applied = applied[:applied.index(composite.expand.current) + 1]
        else:
            applied = []
        declared = []
        for plugin in self.plugins:
            if plugin.after_revision and plugin.after_revision in applied:
                for attr in ("sync", "copy"):
                    declared += [verify.Target(d, revision=plugin
                                               .after_revision)
                                 for d in verify.declarations_of(
                                     getattr(plugin, attr, None))]
        for revision in pending:
            module = self.repository.script.get_revision(revision).module
            declared += [verify.Target(d, contract=revision)
                         for d in verify.declarations_in_module(module)]
        out = []
        for target in verify.targets(entries, declared):
            if target.contract is None and target.revision is not None \
                    and not (self.repository.contracts_after(
                        target.revision) & set(pending)):
                continue
            if target.group is None and not verify.columns_exist(
                    conn, target):
                continue  # declared, but not (or no longer) in the schema
            out.append(target)
        return out

    def _count_disagreeing(self, conn, target):
        if target.group is not None and not verify.columns_exist(
                conn, target):
            return verify.Count(None, error="a table or column it joins "
                                "is missing")
        return verify.count_disagreeing(conn, self.support, target)

    def _sync_checks(self, conn, composite):
        """The live figures of every sync and copy, for version/check."""
        entries = sync_registry.read(conn)
        problems = verify.installed_problems(conn, self.support, entries)
        by_group = {e.name: e for e in entries}
        checks = {}
        for entry in entries:
            for d in entry.declarations:
                target = verify.Target(d, entry.name, entry.revision)
                checks[d.name] = self._sync_check(target, by_group, problems)
        if composite.expand.at_head:
            for target in self._sync_targets(conn, composite, entries):
                check = checks.get(target.name) or self._sync_check(
                    target, by_group, problems)
                count = self._count_disagreeing(conn, target)
                check.rows_disagreeing = count.rows
                check.sample_keys = list(count.sample_keys)
                check.error = count.error
                checks[target.name] = check
        return [checks[n] for n in sorted(checks)]

    @staticmethod
    def _sync_check(target, by_group, problems):
        entry = by_group.get(target.group)
        return SyncCheck(
            target.name, target.kind, target.table, target.columns,
            target.revision, None if entry is None or not entry.triggers
            else target.group not in problems, problems.get(target.group),
            group=target.group)

    def _upgrade(self, branch, online):
        """Upgrade a branch to its head, with bounded, retried lock waits."""
        applied = []

        def record(ctx, step, heads, run_args):
            applied.append(step.up_revision_id)

        context = run_context.RunContext(online=online,
                                         on_version_apply=[record])
        with database.translate_errors(self.settings.connection,
                                       "upgrading the %s branch" % branch):
            self._upgrade_with_retries(branch, context)
        return PhaseResult(branch, applied, self.repository.head(branch))

    def _upgrade_with_retries(self, branch, context):
        settings = self.settings
        attempts = 0
        while True:
            try:
                return self._upgrade_once(branch, context)
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

    def _upgrade_once(self, branch, context):
        with self.engine.connect() as conn:
            with conn.begin():
                vt.ensure(conn)
            self.support.prepare_ddl_session(
                conn, self.settings.lock_wait_timeout)
            if self.support.retry_scope == "statement":
                conn = conn.execution_options(**{RETRY_OPTION: (
                    self.settings.lock_retries,
                    self.settings.lock_retry_backoff)})
            steps = journal.RevisionJournal(
                conn, branch, self._pending(conn, branch),
                branch if context.online else "sync", self.settings.connection)
            guard = ddl_guard.RuleChecker(self.repository,
                                          lambda: steps.current)
            cfg = self.repository.alembic_config({
                "connection": conn, run_context.ATTR: dataclasses.replace(
                    context, on_version_apply=context.on_version_apply + [
                        steps.on_version_apply])})
            steps.start()
            try:
                with ddl_guard.watching(conn, guard):
                    command.upgrade(cfg, "%s@head" % branch)
            except BaseException as exc:
                steps.fail(exc)
                raise
            if conn.in_transaction():
                conn.commit()

    def _pending(self, conn, branch):
        """The revisions of a branch not applied yet, in order."""
        heads = MigrationContext.configure(conn).get_current_heads()
        return self.repository.pending(
            branch, self.repository.positions(heads)[branch])

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
        if backup.MARK_TABLE in tables:
            backup.refuse_if_restoring(conn)
        heads = []
        if ALEMBIC_TABLE in tables:
            heads = list(MigrationContext.configure(conn).get_current_heads())
        recorded = vt.read(conn, vt.DATA) if vt.TABLE_NAME in tables else {}
        steps = vt.read(conn, vt.STEP) if vt.TABLE_NAME in tables else {}
        unknown = [h for h in heads if not self.repository.knows(h)]
        if unknown:
            raise UnknownRevisionError(
                "the database is at revision %s, which this code does not "
                "know: it was upgraded by a newer release or belongs to "
                "another application. Downgrades are not supported; run the "
                "release that upgraded it" % ", ".join(sorted(unknown)))
        own = {ALEMBIC_TABLE, vt.TABLE_NAME}
        # A journal without versions: the first revision was interrupted.
        if not heads and not recorded and not steps and tables - own:
            raise ForeignDatabaseError(
                "the database holds tables (%s) but no version recorded by "
                "manage; it is not a database this tool created. Point "
                "[database] connection at the right database"
                % ", ".join(sorted(tables - own)[:5]))
        current = self.repository.positions(heads)
        open_steps = journal.open_steps(steps, recorded, current,
                                        self.repository)
        composite = self._composite(current, recorded,
                                    conn if count_remaining else None,
                                    open_steps)
        composite.steps = open_steps
        if count_remaining:
            composite.syncs = self._sync_checks(conn, composite)
        return composite

    def _counts_live(self, contract_pending, steps):
        """A predicate: whether a data migration's rows are still there to
        count, i.e. not every contract revision after its expand revision
        has run.  A contract revision the journal shows begun (then
        interrupted or failed) was verified before it began; what it
        dropped is gone.  ``steps``: the journal's open StepStates."""
        begun = {s.name for s in steps if s.phase == CONTRACT}
        pending = set(contract_pending) - begun

        def live(plugin):
            return not plugin.after_revision or bool(
                self.repository.contracts_after(plugin.after_revision) &
                pending)
        return live

    def _composite(self, current, recorded, conn, steps=()):
        """The composite version; with ``conn``, pending rows are counted
        live (a migration recorded done whose rows need it again shows as
        pending with its count)."""
        branches = {}
        for branch in (EXPAND, CONTRACT):
            rev = current.get(branch)
            branches[branch] = BranchState(
                branch, rev, self.repository.head(branch),
                self.repository.pending(branch, rev))
        live = self._counts_live(branches[CONTRACT].pending, steps)
        migrations = []
        for plugin in self.plugins:
            row = recorded.get(plugin.name) or {}
            state = DataMigrationState(
                plugin.name, row.get("state", vt.PENDING),
                row.get("rows_done") or 0, row.get("rows_remaining"),
                plugin.description, row.get("detail"))
            counting = conn is not None and branches[EXPAND].at_head
            if state.done and not (counting and live(plugin)):
                state.rows_remaining = 0
            elif counting:
                state.rows_remaining, failure = self._count_pending(
                    plugin, conn)
                if failure and not state.detail:
                    state.detail = "counting its pending rows failed: %s" \
                        % failure
                if state.done and state.rows_remaining:
                    state.state = vt.PENDING
                    state.detail = (
                        "recorded done, but %d row(s) written since need "
                        "it again" % state.rows_remaining)
            migrations.append(state)
        return CompositeVersion(branches[EXPAND], branches[CONTRACT],
                                migrations)

    def _count_pending(self, plugin, conn):
        """``(count, None)``, or ``(None, what failed)`` when the plugin's
        ``pending()`` raised: ``version`` and ``check`` show ``?`` and the
        failure instead of failing themselves."""
        try:
            return count_pending(plugin, conn), None
        except Exception as exc:  # a plugin's bug must not break version
            if isinstance(exc, sa_exc.SQLAlchemyError):
                conn.rollback()  # PostgreSQL: the failed query aborted it
            return None, database.describe_exception(
                exc, self.settings.connection)

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
    def _run_lock(self, upgrade=True):
        """One run at a time; the holder is recorded for whoever waits.

        Backups and restores (``upgrade=False``) take the lock only: they
        neither refuse unknown databases nor write to them.
        """
        owner = "host %s, pid %d" % (socket.gethostname(), os.getpid())
        with database.translate_errors(self.settings.connection,
                                       "taking the run lock"):
            with self.support.run_lock(self.engine,
                                       self.settings.run_lock_timeout, owner,
                                       self._lock_holder):
                if not upgrade:
                    yield
                    return
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
            present = vt.exists(conn)
        if present:
            # A transaction that writes first: on SQLite, one that reads
            # first fails at once (no busy wait) when it must upgrade its
            # lock while another connection writes.
            with self.engine.begin() as conn:
                if owner:
                    vt.upsert(conn, vt.LOCK, "run", state=vt.RUNNING,
                              detail=owner)
                else:
                    vt.delete(conn, vt.LOCK, "run")

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

    def _database_missing(self):
        return self.support.database_missing(self.url)
