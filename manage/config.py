"""Configuration options (oslo.config) and the settings object built from them.

The options live in two groups: ``[database]`` with ``connection``, the same
option oslo.db-based services already use, and ``[migration]`` with what this
tool adds.  :func:`list_opts` feeds ``oslo-config-generator``.
"""

import dataclasses
import difflib
import glob
import os
from typing import Optional, Tuple

from oslo_config import cfg

from manage.exceptions import ConfigError

DEFAULT_SQLITE_FILE = "manage.sqlite"
DEFAULT_NAMESPACE = "manage.data_migrations"

database_opts = [
    cfg.StrOpt(
        "connection",
        secret=True,
        help="SQLAlchemy URL of the database to upgrade, for example "
        "mysql+pymysql://user:password@host/db or "
        "postgresql+psycopg://user:password@host/db. Default: an SQLite "
        "file named %s in the working directory." % DEFAULT_SQLITE_FILE,
    ),
]

migration_opts = [
    cfg.StrOpt(
        "repository",
        help="Folder of a migration repository (holding migrations/, expand/ "
        "and contract/). Default: the repository bundled with manage.",
    ),
    cfg.StrOpt(
        "data_migration_namespace",
        default=DEFAULT_NAMESPACE,
        help="Stevedore entry-point namespace of the data-migration plugins.",
    ),
    cfg.ListOpt(
        "data_migrations",
        default=[],
        help="Names of the data migrations to run. Empty means every plugin "
        "registered in the namespace. A name that is not registered is an "
        "error.",
    ),
    cfg.IntOpt(
        "batch_size",
        default=1000,
        min=1,
        help="Rows of a data migration's first batch; later batches "
        "adapt (see batch_target_seconds).",
    ),
    cfg.FloatOpt(
        "lock_wait_timeout",
        default=3.0,
        min=0.1,
        help="Seconds a schema change may wait for a table lock before it "
        "gives up and retries (lock_wait_timeout on MySQL, lock_timeout on "
        "PostgreSQL), so that the application never queues behind it.",
    ),
    cfg.IntOpt(
        "lock_retries",
        default=5,
        min=0,
        help="How many times a schema change that timed out waiting for a "
        "table lock is retried, with exponential backoff.",
    ),
    cfg.FloatOpt(
        "lock_retry_backoff",
        default=1.0,
        min=0.0,
        help="Seconds before the first retry of a schema change; doubled "
        "for each further retry.",
    ),
    cfg.FloatOpt(
        "run_lock_timeout",
        default=30.0,
        min=0.0,
        help="Seconds a run waits for another run of manage against the "
        "same database to finish before it gives up.",
    ),
    cfg.FloatOpt(
        "batch_target_seconds",
        default=0.1,
        min=0.001,
        help="Duration a data-migration batch aims at: the batch size "
        "adapts after each batch (starting from batch_size) to take about "
        "this long, within batch_min_size and batch_max_size. Short "
        "batches hold row locks briefly.",
    ),
    cfg.IntOpt(
        "batch_min_size",
        default=100,
        min=1,
        help="Smallest batch of the adaptive batch size, in rows.",
    ),
    cfg.IntOpt(
        "batch_max_size",
        default=20000,
        min=1,
        help="Largest batch of the adaptive batch size, in rows.",
    ),
    cfg.FloatOpt(
        "batch_pause",
        default=0.0,
        min=0.0,
        help="Seconds to sleep between two data-migration batches.",
    ),
    cfg.IntOpt(
        "throttle_threads_running",
        default=25,
        min=0,
        help="MySQL/MariaDB: wait before the next batch while more than "
        "this many threads run statements (Threads_running, not counting "
        "manage's own). 0 disables the check.",
    ),
    cfg.StrOpt(
        "throttle_query",
        help="SQL returning one number, checked before each batch (for "
        "example replica lag in seconds): wait while it is above "
        "throttle_query_max.",
    ),
    cfg.FloatOpt(
        "throttle_query_max",
        default=0.0,
        help="Threshold of throttle_query.",
    ),
    cfg.FloatOpt(
        "throttle_max_wait",
        default=300.0,
        min=0.0,
        help="Seconds migrate waits for the load to drop before it stops "
        "(exit 1, resumable). 0 waits as long as it takes.",
    ),
]

cli_opts = [
    cfg.BoolOpt("debug", default=False,
                help="Show tracebacks and debug logging."),
]


def list_opts():
    """Options for oslo-config-generator (entry point oslo.config.opts)."""
    return [("DEFAULT", cli_opts), ("database", database_opts),
            ("migration", migration_opts)]


def register_opts(conf):
    conf.register_opts(database_opts, group="database")
    conf.register_opts(migration_opts, group="migration")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a run needs to know, independent of oslo.config."""

    connection: str = "sqlite:///" + DEFAULT_SQLITE_FILE
    repository: Optional[str] = None
    data_migration_namespace: str = DEFAULT_NAMESPACE
    data_migrations: Tuple[str, ...] = ()
    batch_size: int = 1000
    lock_wait_timeout: float = 3.0
    lock_retries: int = 5
    lock_retry_backoff: float = 1.0
    run_lock_timeout: float = 30.0
    batch_target_seconds: float = 0.1
    batch_min_size: int = 100
    batch_max_size: int = 20000
    batch_pause: float = 0.0
    throttle_threads_running: int = 25
    throttle_query: Optional[str] = None
    throttle_query_max: float = 0.0
    throttle_max_wait: float = 300.0
    #: Where ``connection`` came from, for messages: ``"--config-file
    #: /etc/app/app.conf"``, ``"OS_DATABASE__CONNECTION"``, ``"the embedded
    #: default"``, ...
    connection_source: str = "the caller"

    def __post_init__(self):
        """Refuse option values that contradict each other, before
        anything runs.  Raises :class:`~manage.exceptions.ConfigError`."""
        if self.batch_min_size > self.batch_max_size:
            raise ConfigError("[migration] batch_min_size (%d) is larger "
                              "than batch_max_size (%d)"
                              % (self.batch_min_size, self.batch_max_size))

    @classmethod
    def from_conf(cls, conf, require_connection=True):
        """Every field from the option of the same name in [migration].

        The connection comes from ``[database] connection`` (a config file,
        or the ``OS_DATABASE__CONNECTION`` environment variable); the
        embedded SQLite default is used only when no config file was read,
        so a config file that lacks it, or sets it empty, is an error
        (unless ``require_connection`` is false: ``lint``).
        Raises :class:`~manage.exceptions.ConfigError`.
        """
        check_option_names(conf)
        group = conf.migration
        values = {f.name: group[f.name] for f in dataclasses.fields(cls)
                  if f.name in group}
        values["data_migrations"] = tuple(values["data_migrations"] or ())
        connection = conf.database.connection
        files = list(conf.config_file or ()) + (
            [conf.config_dir] if conf.config_dir else [])
        if connection:
            source = connection_source(conf)
        elif files and require_connection:
            raise ConfigError(
                "no [database] connection in %s: set it to the database "
                "to upgrade (the embedded SQLite default is used only "
                "when no config file is read)" % ", ".join(files))
        else:
            connection, source = default_connection(), "the embedded default"
        return cls(connection=connection, connection_source=source,
                   **values)


def check_option_names(conf):
    """Refuse an option of ``[migration]`` that manage does not know (a
    misspelt ``batch_sise`` would otherwise be ignored), naming the file and
    the closest known name.  ``[database]`` is shared with oslo.db and the
    service, so its other options are left alone.
    Raises :class:`~manage.exceptions.ConfigError`."""
    known = {opt.dest for opt in migration_opts}
    files = list(conf.config_file or ())
    if conf.config_dir:
        files += sorted(glob.glob(os.path.join(conf.config_dir, "*.conf")))
    for path in files:
        sections = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except Exception:   # oslo.config reported it already, or will
            continue
        for name in sections.get("migration", {}):
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), 1)
                raise ConfigError(
                    "unknown option %s in [migration] of %s%s" % (
                        name, path, "; did you mean %s?" % close[0]
                        if close else " (`oslo-config-generator --namespace "
                        "manage` lists the options)"))


def connection_source(conf):
    """Where oslo.config found ``[database] connection``: the config file
    that set it, or the environment variable."""
    try:
        where = conf.get_location("connection", "database")
    except Exception:   # an oslo.config without locations: say no more
        return "the configuration"
    if where is None or not where.detail:
        return "the configuration"
    if where.location == cfg.Locations.environment:
        return "the environment variable %s" % where.detail
    return where.detail


def default_connection():
    """The embedded default: an SQLite file in the working directory."""
    return "sqlite:///" + os.path.join(os.getcwd(), DEFAULT_SQLITE_FILE)
