"""The ``manage`` command line: parse, call the library, print.

``manage [--config-file FILE]... [--debug] db ACTION``.  Every error of the
:class:`~manage.exceptions.ManageError` family is caught here, in one place,
and becomes one line on stderr and the exit code documented in
``doc/cli.rst``.  All output passes through a filter that removes the
connection password.
"""

import json
import os
import logging
import shlex
import sys
import time
import traceback
import urllib.parse

from oslo_config import cfg

from manage import api, config, database, dialects
from manage.datamigration import progress
from manage.exceptions import ExitCode, ManageError
from manage.repository import Repository
from manage.status import Status

EXIT_OK = ExitCode.OK
EXIT_ERROR = ExitCode.ERROR
EXIT_USAGE = ExitCode.USAGE
CHECK_EXIT = {Status.CURRENT: ExitCode.OK,
              Status.NEEDS_EXPAND: ExitCode.NEEDS_EXPAND,
              Status.NEEDS_MIGRATE: ExitCode.NEEDS_MIGRATE,
              Status.NEEDS_CONTRACT: ExitCode.NEEDS_CONTRACT}
#: migrate's "work remains" is check's "migrate is next".
MIGRATE_EXIT_WORK_REMAINING = ExitCode.NEEDS_MIGRATE


# -- commands ----------------------------------------------------------------
def _target(manager):
    """The database a command works on, password hidden, and where its
    URL came from: ``("sqlite:////srv/app.sqlite", "/etc/app/app.conf")``."""
    return (database.safe_url(manager.settings.connection),
            manager.settings.connection_source)


def _announce_target(manager, out):
    """Say which database is about to change, before anything does."""
    out.write("database: %s (connection from %s)\n" % _target(manager))
    out.flush()


def do_version(manager, args, out):
    composite = manager.version()
    if args.format == "json":
        document = composite.to_dict()
        url, source = _target(manager)
        document["database"] = {"url": url, "source": source}
        out.write(json.dumps(document, indent=2) + "\n")
        return EXIT_OK
    out.write("database: %s (connection from %s)\n" % _target(manager))
    for branch in (composite.expand, composite.contract):
        out.write("%-9s %s (head %s)%s\n" % (
            branch.name + ":", branch.current or "<base>",
            branch.head or "<none>",
            "" if branch.at_head else ", %d pending" % len(branch.pending)))
    out.write("data migrations:\n" if composite.data_migrations else
              "data migrations: none\n")
    for d in composite.data_migrations:
        remaining = "?" if d.rows_remaining is None else d.rows_remaining
        out.write("  %-28s %-8s %d rows done, %s remaining%s\n" % (
            d.name, d.state, d.rows_done, remaining,
            " (%s)" % d.detail if d.detail else ""))
    out.write("column syncs:\n" if composite.syncs else "")
    for check in composite.syncs:
        out.write("  %s\n" % check.summary)
    for step in composite.steps:
        out.write("unfinished: %s %s%s\n" % (
            step.what, step.condition, ", started %s" % step.started_at
            if step.started_at else ""))
    out.write("status: %s\n" % composite.next_step)
    return EXIT_OK


def do_check(manager, args, out):
    composite = manager.check()
    out.write(composite.next_step + "\n")
    # Rows that disagree are expected until migrate is done; a sync that
    # is not installed, or disagreeing rows once contract is next, are not.
    for check in composite.syncs:
        if check.installed is False or (
                not check.ok and composite.status == Status.NEEDS_CONTRACT):
            out.write("  %s\n" % check.summary)
    return CHECK_EXIT[composite.status]


def _phase_report(result, out, verb):
    if result.applied:
        out.write("%s: applied %d revision(s) (%s); %s is at %s\n" % (
            verb, len(result.applied), ", ".join(result.applied),
            result.branch, result.revision))
    else:
        out.write("%s: nothing to do; %s is already at %s\n" % (
            verb, result.branch, result.revision or "<base>"))


def _migrate_report(result, out):
    for o in result.outcomes:
        remaining = "" if o.rows_remaining is None else \
            ", %d remaining" % o.rows_remaining
        out.write("  %-28s %-8s %d rows moved%s%s\n" % (
            o.name, o.state, o.rows_moved, remaining,
            " (%s)" % o.error if o.error else ""))
    out.write("migrate: %d rows moved\n" % result.rows_moved)


class MigrateProgress(progress.Observer):
    """On a terminal, a progress bar per migration (rows done, rows per
    second, time left); otherwise one line per ``interval`` seconds."""

    BAR = 24

    def __init__(self, out, interval=10.0, clock=time.monotonic):
        self.out, self.interval, self.clock = out, interval, clock
        self.tty = out.isatty()
        self.tracker, self.shown = None, 0.0

    def started(self, name, rows_remaining):
        if not rows_remaining:
            return  # nothing to move: no bar, no line
        self.tracker = progress.Tracker(name, rows_remaining, self.clock)
        self.shown = self.clock()
        if not self.tty:
            self._write("migrate: %s: %d rows to move\n"
                        % (name, rows_remaining))

    def batch(self, event):
        if self.tracker is None:
            return
        self.tracker.update(event)
        now = self.clock()
        if now - self.shown >= (0.2 if self.tty else self.interval):
            self.shown = now
            self._show()

    def throttled(self, name, reason, seconds):
        self._write("%smigrate: %s: waited %.1fs for the load to drop (%s)"
                    "\n" % ("\n" if self.tty else "", name, seconds, reason))

    def finished(self, outcome):
        if self.tracker is not None and self.tracker.name == outcome.name:
            self._show()
            if self.tty:
                self._write("\n")
        self.tracker = None

    def _show(self):
        t = self.tracker
        numbers = "%d rows done, %s remaining, %.0f rows/s, %s left" % (
            t.rows_done, "?" if t.rows_remaining is None
            else t.rows_remaining, t.rate,
            progress.format_seconds(t.seconds_left))
        if not self.tty:
            self._write("migrate: %s: %s\n" % (t.name, numbers))
            return
        fraction = t.fraction or 0.0
        filled = int(round(fraction * self.BAR))
        self._write("\r%-28s [%s%s] %3d%% %s\x1b[K" % (
            t.name, "#" * filled, "-" * (self.BAR - filled),
            fraction * 100, numbers))

    def _write(self, text):
        self.out.write(text)
        self.out.flush()


def do_expand(manager, args, out):
    _announce_target(manager, out)
    result = manager.expand()
    _phase_report(result, out, "expand")
    for name in result.repaired:
        out.write("expand: re-created the triggers of %s, which were "
                  "missing or changed\n" % name)
    out.write("next: `manage db migrate`, then deploy the new code\n")
    return EXIT_OK


def do_migrate(manager, args, out):
    """Exit 0 when nothing is left, 4 when work remains (``--max-count``
    reached, or throttled too long), 6 when a migration failed."""
    _announce_target(manager, out)
    result = manager.migrate(
        max_count=args.max_count,
        observer=MigrateProgress(out, args.progress_interval))
    _migrate_report(result, out)
    if result.work_remaining:
        out.write("work remains: run `manage db migrate` again\n")
        return MIGRATE_EXIT_WORK_REMAINING
    out.write("next: once every node runs the new code, "
              "`manage db contract`\n")
    return EXIT_OK


def do_contract(manager, args, out):
    _announce_target(manager, out)
    _phase_report(manager.contract(), out, "contract")
    return EXIT_OK


def _backup_report(path, out):
    out.write("backup: %s\n" % (
        "written to %s (restore with `manage db restore %s`)" % (path, path)
        if path else "none taken, the database does not exist yet"))
    out.flush()


def do_sync(manager, args, out):
    _announce_target(manager, out)
    result = manager.sync(backup_dir=args.backup, on_backup=lambda path:
                          _backup_report(path, out))
    _phase_report(result.expand, out, "expand")
    _migrate_report(result.migrate, out)
    _phase_report(result.contract, out, "contract")
    do_version(manager, _Args(format="text"), out)
    return EXIT_OK


def do_backup(manager, args, out):
    _backup_report(manager.backup(args.directory), out)
    return EXIT_OK


def do_restore(manager, args, out):
    def safety(path):
        out.write("restore: safety backup of the database as it was: "
                  "written to %s (restore with `manage db restore %s`)\n"
                  % (path, path))
        out.flush()
    result = manager.restore(
        args.file, safety_backup_dir=args.safety_backup_dir,
        safety_backup=not args.no_safety_backup,
        require_manifest=not args.without_manifest,
        other_database=args.other_database, on_safety_backup=safety)
    out.write("restore: the database now holds the content of %s\n"
              % args.file)
    if result.revisions_before != result.revisions_after:
        out.write("restore: revisions %s (were %s); run the release that "
                  "matches them, `manage db check` says what it needs\n" % (
                      ", ".join(result.revisions_after) or "<none>",
                      ", ".join(result.revisions_before) or "<none>"))
    return EXIT_OK


def do_lint(manager, args, out):
    result = manager.lint(args.dialect)
    for finding in result.findings:
        out.write("%s\n" % finding)
    out.write("lint: %s; checked %s\n" % (
        "ok" if result.ok else "%d problem(s)" % len(result.findings),
        ", ".join("%d revisions on %s" % (n, d)
                  for d, n in sorted(result.rendered.items()))))
    return EXIT_OK if result.ok else EXIT_ERROR


class _Args:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def add_command_parsers(subparsers):
    db = subparsers.add_parser("db", help="database upgrade commands")
    actions = db.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    def action(name, func, help_text):
        parser = actions.add_parser(name, help=help_text,
                                    description=help_text)
        parser.set_defaults(func=func)
        return parser

    action("expand", do_expand, "Add new schema objects and the triggers "
           "that keep old and new columns in sync (online).")
    migrate = action("migrate", do_migrate, "Run the pending data "
                     "migrations in small batches (online).")
    migrate.add_argument("--max-count", type=_positive_int, default=None,
                         help="Move at most N rows, then stop; exit 4 if "
                         "work remains, 0 if none does, 6 if a migration "
                         "failed.")
    migrate.add_argument("--progress-interval", type=float, default=10.0,
                         metavar="SECONDS",
                         help="When the output is not a terminal, write a "
                         "progress line every SECONDS (default 10).")
    action("contract", do_contract, "Drop the sync triggers and what the new "
           "code no longer uses, once every node runs it (online).")
    sync = action("sync", do_sync, "Offline upgrade: expand, migrate and "
                  "contract in one run, without triggers.")
    sync.add_argument("--backup", metavar="DIR", default=None,
                      help="Back up the database into DIR first.")
    backup = action("backup", do_backup, "Back up the database into a new "
                    "file in DIR, readable by its owner only.")
    backup.add_argument("directory", metavar="DIR")
    restore = action("restore", do_restore, "Replace the database's content "
                     "with a backup FILE made by `manage db backup`, "
                     "verified first; a safety backup of the database is "
                     "taken before.")
    restore.add_argument("file", metavar="FILE")
    restore.add_argument("--safety-backup-dir", metavar="DIR", default=None,
                         help="Write the safety backup into DIR (default: "
                         "the folder of FILE).")
    restore.add_argument("--no-safety-backup", action="store_true",
                         help="Take no safety backup of the database "
                         "before replacing it.")
    restore.add_argument("--without-manifest", action="store_true",
                         help="Accept a backup that has no manifest "
                         "(FILE.manifest); it is still read in full first.")
    restore.add_argument("--other-database", action="store_true",
                         help="Accept a backup taken of another database.")
    lint = action("lint", do_lint, "Check the migration repository without "
                  "a database: expand only adds, contract only removes. "
                  "Exit 1 on a problem.")
    lint.add_argument("--dialect", action="append", default=None,
                      choices=dialects.names(),
                      help="Check for this dialect only (repeatable; "
                      "default: all).")
    version = action("version", do_version, "Show the composite version: "
                     "both branches and the data migrations.")
    version.add_argument("--format", choices=("text", "json"),
                         default="text")
    action("check", do_check, "Exit 0 when current, 3 when expand, 4 when "
           "migrate, 5 when contract is needed; 1 on error.")


def _positive_int(text):
    import argparse
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("must be a whole number >= 1")
    return value


# -- output hygiene ----------------------------------------------------------
class RedactingStream:
    """Writes to a stream with every known secret replaced by ***, and the
    commands it advises (```manage db ...```) completed with the
    ``--config-file`` options this run was given (``command``), so that
    they work when pasted."""

    def __init__(self, stream, secrets=(), command="manage"):
        self.stream = stream
        self.secrets = [s for s in secrets if s]
        self.command = command

    def write(self, text):
        if self.command != "manage":
            text = text.replace("`manage db ", "`%s db " % self.command)
        return self.stream.write(database.redact(text, self.secrets))

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return self.stream.isatty()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _error(err, message):
    err.write("manage: error: %s\n" % message.replace("\n", " "))


# -- entry point -------------------------------------------------------------
def build_conf():
    conf = cfg.ConfigOpts()
    conf.register_cli_opts(config.cli_opts)
    conf.register_cli_opt(cfg.SubCommandOpt(
        "command", title="Commands", handler=add_command_parsers))
    config.register_opts(conf)
    return conf


def main(argv=None, stdout=None, stderr=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    raw_out = stdout or sys.stdout
    raw_err = stderr or sys.stderr
    conf = build_conf()
    real_stderr = sys.stderr
    sys.stderr = raw_err  # argparse writes usage errors to sys.stderr
    if argv[:1] == ["--shell_completion"]:
        # oslo.config's own needs a template its wheel does not ship.
        return _print_shell_completion(argv[1:2], raw_out, raw_err)
    try:
        conf(argv, project="manage", prog="manage", version=_version())
    except SystemExit as exc:  # --help, or a usage error (argparse)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except cfg.Error as exc:
        _error(raw_err, "configuration: %s" % _first_line(exc))
        return EXIT_ERROR
    except OSError as exc:  # a config file that is a folder, or unreadable
        _error(raw_err, "configuration: cannot read %s: %s"
               % (exc.filename, exc.strerror))
        return EXIT_ERROR
    finally:
        sys.stderr = real_stderr
    debug = bool(conf.debug)
    try:
        settings = config.Settings.from_conf(
            conf, require_connection=conf.command.func is not do_lint)
    except cfg.Error as exc:
        _error(raw_err, "configuration: %s" % _first_line(exc))
        return EXIT_ERROR
    except ManageError as exc:
        _error(raw_err, database.redact_text(
            str(exc), conf.database.connection or ""))
        return exc.exit_code
    password = database.password_of(settings.connection)
    # as decoded, and as written in the URL (percent-encoded)
    secrets = [password,
               password and urllib.parse.quote(password, safe="")]
    command = _command_prefix(argv)
    out = RedactingStream(raw_out, secrets, command)
    err = RedactingStream(raw_err, secrets, command)
    restore_logging = _setup_logging(err, debug)
    manager = None
    try:
        repository = plugins = None
        if conf.command.func is do_lint:
            # lint reports a misshapen repository (the others refuse it);
            # it runs no data migration
            repository = Repository(settings.repository, strict=False)
            plugins = []
        manager = api.Manager(settings, repository=repository,
                              plugins=plugins)
        return conf.command.func(manager, conf.command, out)
    except ManageError as exc:
        if debug:
            err.write(traceback.format_exc())
        _error(err, database.redact_text(str(exc), settings.connection))
        return exc.exit_code
    except KeyboardInterrupt:
        if raw_out.isatty():
            raw_out.write("\n")   # end a progress bar's line first
            raw_out.flush()
        _error(err, "interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        if raw_out is sys.__stdout__:
            # Python flushes stdout at exit: point its descriptor at
            # /dev/null so that flush cannot fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.__stdout__.fileno())
            os.close(devnull)
        return EXIT_ERROR
    except Exception as exc:
        if debug:
            err.write(traceback.format_exc())
        _error(err, "unexpected %s: %s (run with --debug for the traceback)"
               % (type(exc).__name__, database.redact_text(
                   _first_line(exc), settings.connection)))
        return EXIT_ERROR
    finally:
        if manager is not None:
            manager.close()
        restore_logging()


def _version():
    """The installed distribution's version (``0.1.0``)."""
    import importlib.metadata
    try:
        return importlib.metadata.version("manage")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _print_shell_completion(shells, out, err):
    """``manage --shell_completion bash|zsh``: a completion script for the
    actions of ``manage db`` and their options, from the parser itself.
    Load it with ``eval "$(manage --shell_completion bash)"``."""
    import argparse
    if shells not in (["bash"], ["zsh"]):
        _error(err, "--shell_completion takes bash or zsh")
        return EXIT_USAGE
    commands = argparse.ArgumentParser(prog="manage").add_subparsers()
    add_command_parsers(commands)
    actions = next(a for a in commands.choices["db"]._actions
                   if isinstance(a, argparse._SubParsersAction))
    cases = "".join(
        "        %s) words=\"%s\" ;;\n" % (name, " ".join(
            s for a in sub._actions for s in a.option_strings
            if s.startswith("--")))
        for name, sub in actions.choices.items())
    script = (
        "%s_manage_complete() {\n"
        "    local cur=${COMP_WORDS[COMP_CWORD]} words i db=0\n"
        "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
        "        [ \"${COMP_WORDS[i]}\" = db ] && { db=$i; break; }\n"
        "    done\n"
        "    if [ $db -eq 0 ]; then\n"
        "        words=\"db --config-file --config-dir --debug --help "
        "--version\"\n"
        "    elif [ $((db + 1)) -eq $COMP_CWORD ]; then\n"
        "        words=\"%s\"\n"
        "    else\n"
        "        case \"${COMP_WORDS[db + 1]}\" in\n%s"
        "        esac\n"
        "    fi\n"
        "    COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
        "}\n"
        "complete -o default -F _manage_complete manage\n") % (
            "autoload -U +X bashcompinit && bashcompinit\n"
            if shells == ["zsh"] else "", " ".join(actions.choices), cases)
    out.write(script)
    return EXIT_OK


def _command_prefix(argv):
    """``manage`` with the configuration options of ``argv`` (those before
    the command), quoted for a POSIX shell."""
    words, options = ["manage"], ("--config-file", "--config-dir")
    args = iter(argv)
    for arg in args:
        if arg == "db":
            break
        if arg in options:
            words += [arg, shlex.quote(next(args, ""))]
        elif arg.startswith(tuple(o + "=" for o in options)):
            name, value = arg.split("=", 1)
            words += [name, shlex.quote(value)]
    return " ".join(words)


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: The loggers whose records the command line shows.
_LOGGERS = ("manage", "alembic", "sqlalchemy", "stevedore")


def _setup_logging(stream, debug):
    """Show the records of manage's own loggers (and of the libraries it
    drives) on ``stream``, without touching the root logger or any other
    process-wide state: a service calling :func:`main` keeps its logging.
    Returns a function that undoes it."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    levels = {"manage": logging.DEBUG if debug else logging.WARNING,
              "alembic": logging.INFO if debug else logging.WARNING,
              "sqlalchemy": logging.WARNING, "stevedore": logging.WARNING}
    saved = []
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(levels[name])
        logger.addHandler(handler)
        logger.propagate = False

    def restore():
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
    return restore


if __name__ == "__main__":
    sys.exit(main())
