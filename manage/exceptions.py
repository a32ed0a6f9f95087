"""The one exception family of manage, and the exit codes of its CLI.

Every error the library raises on purpose is a :class:`ManageError`.  The CLI
catches this family in one place and turns it into one line on stderr and the
exit code the class carries (:class:`ExitCode`).  Messages never contain a
password: they are built from redacted URLs, and the CLI redacts its output
once more.
"""

import enum


class ExitCode(enum.IntEnum):
    """What a ``manage`` command's exit status means, the same for every
    command (the table in doc/cli.rst), so that a runbook can branch on it:
    ``while manage db migrate --max-count N; [ $? -eq 4 ]`` repeats while
    work remains and stops on any error."""

    OK = 0                 #: success; ``check``: the database is current
    ERROR = 1              #: fix something: configuration, refusal, ...
    USAGE = 2              #: unknown action or option, bad option value
    NEEDS_EXPAND = 3       #: ``check``: expand is next
    NEEDS_MIGRATE = 4      #: ``check``: migrate is next; ``migrate``: work
    #: remains (``--max-count`` reached, or throttled too long): run again
    NEEDS_CONTRACT = 5     #: ``check``: contract is next
    MIGRATION_FAILED = 6   #: a data migration failed (the others ran)
    LOCK_HELD = 7          #: another run holds the run lock: try later
    INTERRUPTED = 130      #: Ctrl-C (SIGINT)
    TERMINATED = 143       #: SIGTERM


class ManageError(Exception):
    """Base class: a failure the operator can act on."""

    exit_code = ExitCode.ERROR


class ConfigError(ManageError):
    """The configuration (file, option or connection URL) is not usable."""


class RepositoryError(ManageError):
    """The migration repository is missing or inconsistent."""


class DatabaseError(ManageError):
    """The database could not be reached or answered with an error."""


class UnknownRevisionError(ManageError):
    """The database records a revision this code does not know."""


class ForeignDatabaseError(ManageError):
    """The database holds tables but no version that manage recorded."""


class OutOfOrderError(ManageError):
    """A phase was asked for before the phase it depends on completed."""


class PluginError(ManageError):
    """A data-migration plugin failed to load or is misdeclared."""


class DataMigrationError(ManageError):
    """One or more data migrations failed while running."""

    #: ``migrate`` and ``sync`` exit 6 when a migration failed (the others
    #: still ran): neither "work remains" (4) nor a usage error (2).
    exit_code = ExitCode.MIGRATION_FAILED

    def __init__(self, message, failures=()):
        super().__init__(message)
        self.failures = list(failures)


class ShapeError(ManageError):
    """A table, column or trigger that a sync or copy cannot support;
    refused at expand, naming the table and the reason."""


class DataConversionError(ManageError):
    """An expression could not convert a value (malformed JSON, a value
    too long for its column, ...): refused instead of storing NULL."""


class LockHeldError(ManageError):
    """Another run holds the run lock of this database."""

    exit_code = ExitCode.LOCK_HELD


class LockTimeoutError(ManageError):
    """A schema change could not get its table lock within the bound."""


class PrivilegeError(ManageError):
    """The database user lacks a privilege the step needs."""


class UnsupportedDialectError(ManageError):
    """No per-dialect support is registered for this database."""


class BackupError(ManageError):
    """A backup file that cannot be restored (missing, empty, not a backup,
    damaged, of another database or of a release this code does not know);
    refused before anything changes."""


class RestoreIncompleteError(ManageError):
    """The database is marked as being restored: a restore that cannot be
    one transaction (MySQL/MariaDB) stopped part-way.  Every command but
    ``restore`` refuses until a restore completes."""


class Interrupted(ManageError):
    """A backup or restore was interrupted (Ctrl-C, SIGTERM, SIGHUP); the
    message says what the database holds.  Exits 128 + the signal number
    (130 for Ctrl-C, 143 for SIGTERM)."""

    exit_code = 130

    def __init__(self, message, signum=2):
        super().__init__(message)
        self.exit_code = 128 + int(signum)
