"""The ``manage`` command line: parse, call the library, print.

``manage [--config-file FILE]... [--debug] db ACTION``.  Every error of the
:class:`~manage.exceptions.ManageError` family is caught here, in one place,
and becomes one line on stderr and the exit code documented in
``doc/cli.rst``.  All output passes through a filter that removes the
connection password.
"""

import json
import logging
import sys
import traceback

from oslo_config import cfg

from manage import api, config, database
from manage.exceptions import ManageError
from manage.status import Status

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
CHECK_EXIT = {Status.CURRENT: 0, Status.NEEDS_EXPAND: 3,
              Status.NEEDS_MIGRATE: 4, Status.NEEDS_CONTRACT: 5}
MIGRATE_EXIT_WORK_REMAINING = 1


# -- commands ----------------------------------------------------------------
def do_version(manager, args, out):
    composite = manager.version()
    if args.format == "json":
        out.write(json.dumps(composite.to_dict(), indent=2) + "\n")
        return EXIT_OK
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
    out.write("status: %s\n" % composite.next_step)
    return EXIT_OK


def do_check(manager, args, out):
    composite = manager.check()
    out.write(composite.next_step + "\n")
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
        out.write("  %-28s %-8s %d rows moved%s\n" % (
            o.name, o.state, o.rows_moved, remaining))
    out.write("migrate: %d rows moved\n" % result.rows_moved)


def do_expand(manager, args, out):
    _phase_report(manager.expand(), out, "expand")
    out.write("next: `manage db migrate`, then deploy the new code\n")
    return EXIT_OK


def do_migrate(manager, args, out):
    result = manager.migrate(max_count=args.max_count)
    _migrate_report(result, out)
    if result.work_remaining:
        out.write("work remains: run `manage db migrate` again\n")
        return MIGRATE_EXIT_WORK_REMAINING
    out.write("next: once every node runs the new code, "
              "`manage db contract`\n")
    return EXIT_OK


def do_contract(manager, args, out):
    _phase_report(manager.contract(), out, "contract")
    return EXIT_OK


def do_sync(manager, args, out):
    result = manager.sync()
    _phase_report(result.expand, out, "expand")
    _migrate_report(result.migrate, out)
    _phase_report(result.contract, out, "contract")
    do_version(manager, _Args(format="text"), out)
    return EXIT_OK


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
                         help="Move at most N rows, then stop; exit 1 if "
                         "work remains.")
    action("contract", do_contract, "Drop the sync triggers and what the new "
           "code no longer uses, once every node runs it (online).")
    action("sync", do_sync, "Offline upgrade: expand, migrate and contract "
           "in one run, without triggers.")
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
    """Writes to a stream with every known secret replaced by ***."""

    def __init__(self, stream, secrets=()):
        self.stream = stream
        self.secrets = [s for s in secrets if s]

    def write(self, text):
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return self.stream.write(text)

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
    try:
        conf(argv, project="manage", prog="manage")
    except SystemExit as exc:  # --help, or a usage error (argparse)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except cfg.Error as exc:
        _error(raw_err, "configuration: %s" % _first_line(exc))
        return EXIT_ERROR
    finally:
        sys.stderr = real_stderr
    debug = bool(conf.debug)
    try:
        settings = config.Settings.from_conf(conf)
    except cfg.Error as exc:
        _error(raw_err, "configuration: %s" % _first_line(exc))
        return EXIT_ERROR
    secrets = [database.password_of(settings.connection)]
    out = RedactingStream(raw_out, secrets)
    err = RedactingStream(raw_err, secrets)
    _setup_logging(err, debug)
    manager = None
    try:
        manager = api.Manager(settings)
        return conf.command.func(manager, conf.command, out)
    except ManageError as exc:
        if debug:
            err.write(traceback.format_exc())
        _error(err, database.redact_text(str(exc), settings.connection))
        return exc.exit_code
    except KeyboardInterrupt:
        _error(err, "interrupted")
        return 130
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
        logging.getLogger().handlers[:] = []


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _setup_logging(stream, debug):
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("alembic").setLevel(
        logging.INFO if debug else logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
