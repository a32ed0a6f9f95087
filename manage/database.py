"""Connecting to the database: URL parsing, engines, and password redaction."""

import contextlib
import os

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from manage import dialects
from manage.exceptions import ConfigError, DatabaseError

# Drivers manage installs and tests; a bare dialect name maps to these.
DEFAULT_DRIVERS = {"mysql": "pymysql", "mariadb": "pymysql",
                   "postgresql": "psycopg"}


def parse_url(connection):
    """Parse and normalise a connection URL; raise ConfigError if malformed."""
    try:
        url = make_url(connection)
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise ConfigError(
            "[database] connection is not a valid database URL: %s"
            % redact_text(str(exc), connection)) from None
    if "+" not in url.drivername and url.drivername in DEFAULT_DRIVERS:
        url = url.set(drivername="%s+%s" % (
            url.drivername, DEFAULT_DRIVERS[url.drivername]))
    if url.drivername.startswith("mysql+pymysql") and \
            "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url


def safe_url(url):
    """The URL as text with the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def password_of(connection):
    try:
        return make_url(connection).password or None
    except Exception:
        return None


def redact_text(text, connection):
    """Remove the connection's password from text, wherever it appears."""
    password = password_of(connection) if connection else None
    if password:
        text = text.replace(str(password), "***")
    return text


def create_engine(connection, **kwargs):
    """An engine for the connection, with per-dialect session setup."""
    url = parse_url(connection)
    if url.get_backend_name() == "sqlite":
        _check_sqlite_path(url)
    support = dialects.get(url.get_backend_name())
    try:
        engine = sa.create_engine(url, **support.engine_options(), **kwargs)
    except sa_exc.NoSuchModuleError:
        raise ConfigError(
            "[database] connection names an unknown database or driver "
            "'%s'" % url.drivername) from None
    except ImportError as exc:
        raise ConfigError(
            "the driver for '%s' is not installed (%s); for PostgreSQL "
            "install the 'postgresql' extra" % (url.drivername, exc.name)
        ) from None
    support.configure_engine(engine)
    return engine


def _check_sqlite_path(url):
    path = url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError("the folder of the SQLite database %s does not "
                          "exist" % path)


def describe_dbapi_error(exc, connection):
    """One readable line for a driver error, without the password."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else \
        type(orig).__name__
    return redact_text(text, connection)


@contextlib.contextmanager
def translate_errors(connection, doing):
    """Turn driver errors raised inside the block into DatabaseError."""
    try:
        yield
    except sa_exc.DBAPIError as exc:
        raise DatabaseError("%s failed on %s: %s" % (
            doing, safe_url(connection),
            describe_dbapi_error(exc, connection))) from exc
