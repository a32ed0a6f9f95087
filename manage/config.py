"""Configuration options (oslo.config) and the settings object built from them.

The options live in two groups: ``[database]`` with ``connection``, the same
option oslo.db-based services already use, and ``[migration]`` with what this
tool adds.  :func:`list_opts` feeds ``oslo-config-generator``.
"""

import dataclasses
import os
from typing import Optional, Tuple

from oslo_config import cfg

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
        help="Rows a data migration moves per transaction.",
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

    @classmethod
    def from_conf(cls, conf):
        m = conf.migration
        connection = conf.database.connection or default_connection()
        return cls(
            connection=connection,
            repository=m.repository,
            data_migration_namespace=m.data_migration_namespace,
            data_migrations=tuple(m.data_migrations or ()),
            batch_size=m.batch_size,
            lock_wait_timeout=m.lock_wait_timeout,
            lock_retries=m.lock_retries,
            lock_retry_backoff=m.lock_retry_backoff,
            run_lock_timeout=m.run_lock_timeout,
        )


def default_connection():
    """The embedded default: an SQLite file in the working directory."""
    return "sqlite:///" + os.path.join(os.getcwd(), DEFAULT_SQLITE_FILE)
