"""What a repository's ``env.py`` runs: Alembic configured the manage way.

Every revision runs in its own transaction, and after each one the composite
version table records where its branch stands (inside the same transaction
where the database has transactional DDL).

When manage drives Alembic it hands over an open connection and its run
context (:mod:`manage.run_context`), after the checks of its commands.
When Alembic is driven without that run context (the plain ``alembic``
command, or :func:`alembic.command.upgrade` called from Python), the same
guards hold, so that nothing can bypass them:

* an online upgrade that would run a contract revision, a downgrade and a
  stamp are refused before anything changes (:class:`PlainAlembicError`,
  one line naming the ``manage db`` commands to run): contract runs only
  through ``manage db contract`` or ``manage db sync``, which first check
  that expand is at its head and every data migration is done, counting the
  rows live;
* an expand-only upgrade (``alembic upgrade expand@head``) runs as
  ``manage db expand`` runs it: under the run lock, after the same refusals
  of unknown and foreign databases and the trigger privilege check, with
  bounded lock waits, the DDL rule guard (:mod:`manage.ddl_guard`), the
  journal of steps and the composite version table;
* commands that run no revision (``alembic current``) and offline ``--sql``
  rendering are left alone.

The connection comes from ``sqlalchemy.url`` in the ini file or from
manage's own configuration (``[database] connection``, from the files
oslo.config finds for the project ``manage`` or the environment variable
``OS_DATABASE__CONNECTION``).
"""

import dataclasses
import os

from alembic.util import CommandError

from manage import run_context, verify, version_table
from manage.exceptions import ManageError

ATTR_CONNECTION = "connection"
#: The journal's name for a run driven by plain Alembic.
PLAIN_COMMAND = "alembic upgrade"
DOWNGRADE = ("refused: plain Alembic may not downgrade (to %s): manage does "
             "not support downgrades; nothing was changed. To go back, "
             "restore a backup with `manage db restore FILE` (taken by "
             "`manage db backup` or `manage db sync --backup`)")


class PlainAlembicError(ManageError, CommandError):
    """Plain Alembic refused: a contract, a downgrade, a stamp, or a guard.

    Raised when Alembic runs the environment without manage's run context
    and is asked for what only manage may do, or a guard of manage refused
    what it ran.

    A :class:`CommandError` too, so the ``alembic`` command prints the one
    line (``FAILED: ...``) without a traceback and exits 255.
    """


def run_migrations(context):
    """Run the migrations of an Alembic environment (``env.py``'s body).

    :raises PlainAlembicError: driven without manage's run context, for an
        online contract upgrade, a downgrade, a stamp, or a guard's refusal.
    """
    config = context.config
    connection = config.attributes.get(ATTR_CONNECTION)
    if context.is_offline_mode():
        context.configure(url=_url(config), literal_binds=True,
                          transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    if run_context.ATTR not in config.attributes:
        _run_plain(context, connection)
        return
    if connection is not None:
        _run_online(context, connection)
        return
    from manage import database
    engine = database.create_engine(_url(config))
    try:
        with engine.connect() as connection:
            _run_online(context, connection)
            connection.commit()
    finally:
        engine.dispose()


def _run_online(context, connection):
    run = run_context.current(context.config)
    context.configure(
        connection=connection,
        target_metadata=None,
        transaction_per_migration=True,
        on_version_apply=[_record_branch] + list(run.on_version_apply),
    )
    with context.begin_transaction():
        context.run_migrations()


def _record_branch(ctx, step, heads, run_args):
    """Mirror the branch's new revision into the composite version table."""
    if not step.is_upgrade:
        return
    revision = step.up_revision
    labels = revision.branch_labels if revision is not None else ()
    for branch in ("expand", "contract"):
        if branch in labels:
            version_table.ensure(ctx.connection)
            version_table.set_branch(ctx.connection, branch,
                                     revision.revision)
    # The registry of syncs: stamp the revision's records; after an expand
    # revision, re-create a sync a rebuilt table lost (manage.verify).
    verify.on_version_apply(ctx, step, heads, run_args)


def _url(config):
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    return _manage_settings().connection


def _manage_settings():
    """manage's own configuration, as ``manage`` with no option reads it."""
    from oslo_config import cfg

    from manage import config as manage_config
    from manage.exceptions import ConfigError
    conf = cfg.ConfigOpts()
    manage_config.register_opts(conf)
    try:
        conf([], project="manage")
        return manage_config.Settings.from_conf(conf)
    except cfg.Error as exc:
        raise ConfigError("configuration: %s" % str(exc).strip()
                          .splitlines()[0]) from None


# -- Alembic driven without manage ------------------------------------------
def _run_plain(context, connection):
    """Refuse what only manage may run; run an expand-only upgrade as
    ``manage db expand`` would."""
    from manage import database
    try:
        if connection is not None:
            url = connection.engine.url.render_as_string(hide_password=False)
            _plain_online(context, connection, url, owned=False)
            return
        url = _url(context.config)
        engine = database.create_engine(url)
        try:
            with engine.connect() as connection:
                _plain_online(context, connection, url, owned=True)
        finally:
            engine.dispose()
    except PlainAlembicError:
        raise
    except ManageError as exc:
        # One line for the alembic command, no traceback; the same text
        # and exit code as manage gives it.
        error = PlainAlembicError(str(exc))
        error.exit_code = exc.exit_code
        raise error from exc


def _plain_online(context, connection, url, owned):
    """``owned``: the connection is ours (else the caller's, whose
    transaction is left alone until the expand revisions run)."""
    from manage import api, config as manage_config, database, ddl_guard, \
        journal
    from manage.repository import EXPAND, Repository
    repository = Repository(os.path.dirname(os.path.abspath(
        context.script.dir)))
    context.configure(connection=connection, target_metadata=None,
                      transaction_per_migration=True)
    steps = _steps(context)
    if not steps:       # alembic current and the like: nothing to guard
        if owned:
            _end_read(connection, owned)
        return
    revisions = _refuse(repository, steps)
    if not owned and getattr(connection, "_trans_context_manager", None):
        raise PlainAlembicError(
            "refused: the connection handed to Alembic is inside a "
            "transaction block (engine.begin() or connection.begin()); "
            "expand commits each revision and its journal on its own, as "
            "`manage db expand` does: hand over a connection from "
            "engine.connect(), or run `manage db expand`; nothing was "
            "changed")
    _end_read(connection, owned)    # hold nothing while the run lock waits
    # manage's options (lock waits, run lock timeout) where it has a
    # configuration; the defaults with the ini file's URL
    settings = manage_config.Settings() if context.config.get_main_option(
        "sqlalchemy.url") else _manage_settings()
    settings = dataclasses.replace(settings, connection=url,
                                   repository=repository.path)
    manager = api.Manager(settings, repository=repository, plugins=[])
    try:
        with manager._run_lock():       # refuses unknown/foreign databases
            steps = _steps(context)     # again, now that nobody else runs
            revisions = _refuse(repository, steps) if steps else []
            if not revisions:
                _end_read(connection, owned)
                return
            with database.translate_errors(url, "checking privileges"):
                manager._check_trigger_privileges(connection, revisions)
                _end_read(connection, owned)
                if connection.in_transaction():
                    connection.commit()     # as manage db expand does
                with connection.begin():
                    version_table.ensure(connection)
                # kept: the journal's start commits the session settings
                manager.support.prepare_ddl_session(
                    connection, settings.lock_wait_timeout)
            steps_journal = journal.RevisionJournal(
                connection, EXPAND, revisions, PLAIN_COMMAND, url)
            guard = ddl_guard.RuleChecker(repository,
                                          lambda: steps_journal.current)
            context.configure(
                connection=connection, target_metadata=None,
                transaction_per_migration=True,
                on_version_apply=[_record_branch,
                                  steps_journal.on_version_apply])
            steps_journal.start()
            try:
                with database.translate_errors(
                        url, "upgrading the expand branch"):
                    with ddl_guard.watching(connection, guard):
                        with context.begin_transaction():
                            context.run_migrations()
            except BaseException as exc:
                steps_journal.fail(exc)
                raise
            if connection.in_transaction():
                connection.commit()
            manager._repair_syncs()     # as manage db expand ends
    finally:
        manager.close()


def _steps(context):
    """The steps Alembic is about to run, asked without running them.

    The work function of an upgrade or a downgrade only computes the steps
    from the revision graph; the one of ``current`` prints (once: a command
    that yields no steps is not asked again).
    """
    migration = context.get_context()
    work = migration._migrations_fn
    if getattr(work, "__name__", None) == "downgrade":
        # alembic.command.downgrade's work function: refused before it is
        # asked (it needs downgrade() functions, which revisions lack)
        raise PlainAlembicError(DOWNGRADE % (
            context.get_revision_argument() or "base"))
    heads = migration.get_current_heads()
    return list(work(heads, migration))


def _end_read(connection, owned):
    """End the reading transaction of a connection: roll ours back; commit
    the caller's, which it handed over for revisions that commit each."""
    if connection.in_transaction():
        if owned:
            connection.rollback()
        else:
            connection.commit()


def _refuse(repository, steps):
    """The expand revisions of an allowed upgrade, in order; else raise."""
    from manage.repository import EXPAND
    commands = ("run `manage db expand`, `manage db migrate`, then, once "
                "every node runs the new code, `manage db contract` (`manage "
                "db sync` while no application runs)")
    if any(getattr(s, "is_stamp", False) or not hasattr(s, "revision")
           for s in steps):
        raise PlainAlembicError(
            "refused: plain Alembic may not stamp a database manage "
            "upgrades (manage keeps its own version table, manage_version, "
            "in step with alembic_version, and would no longer know what is "
            "applied); nothing was changed; %s" % commands)
    down = [s.revision.revision for s in steps if not s.is_upgrade]
    if down:
        raise PlainAlembicError(DOWNGRADE % ", ".join(down))
    revisions = [s.revision.revision for s in steps]
    other = [r for r in revisions if repository.branch_of(r) != EXPAND]
    if other:
        raise PlainAlembicError(
            "refused: plain Alembic may not run contract revision(s) %s: "
            "contract drops the old columns, and only manage checks first "
            "that expand is at its head and every data migration is done "
            "(rows counted live); nothing was changed; %s; `alembic upgrade "
            "expand@head` runs the expand branch alone" % (
                ", ".join(other), commands))
    return revisions
