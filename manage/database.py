"""Connecting to the database: URL parsing, engines, and password redaction."""

import contextlib
import re

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from manage import dialects
from manage.exceptions import ConfigError, DatabaseError, ManageError

def parse_url(connection):
    """Parse and normalise a connection URL; raise ConfigError if malformed."""
    try:
        url = make_url(connection)
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise ConfigError(
            "[database] connection is not a valid database URL: %s"
            % redact_text(str(exc), connection)) from None
    try:
        support = dialects.get(url.get_backend_name())
    except ManageError:
        return url   # refused with its reason by validate()
    return support.normalize_url(url)


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
    return redact(text, [password_of(connection) if connection else None])


def redact(text, secrets):
    """Replace each secret where it stands as a token of its own.

    A secret is matched only when no letter or digit touches it, so a short
    password (say ``p``) is hidden in ``app:p@host`` without garbling every
    word that contains its letters.
    """
    for secret in secrets:
        if secret:
            text = re.sub(r"(?<![A-Za-z0-9])%s(?![A-Za-z0-9])"
                          % re.escape(str(secret)), "***", text)
    return text


def validate(connection):
    """Parse the URL and check what can be checked without connecting."""
    url = parse_url(connection)
    dialects.get(url.get_backend_name()).check_url(url, connection)
    return url


def create_engine(connection, **kwargs):
    """An engine for the connection, with per-dialect session setup."""
    url = validate(connection)
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


def describe_dbapi_error(exc, connection):
    """One readable line for a driver error, without the password."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else \
        type(orig).__name__
    return redact_text(text, connection)


def describe_exception(exc, connection):
    """One readable line for any failure, without the password: a driver
    error's first line (no SQL, no links), a ManageError's message, or
    ``Type: message`` for anything else (a plugin's own bug)."""
    if isinstance(exc, sa_exc.DBAPIError):
        return describe_dbapi_error(exc, connection)
    if isinstance(exc, ManageError):
        return redact_text(str(exc), connection)
    return redact_text("%s: %s" % (type(exc).__name__, exc), connection)


@contextlib.contextmanager
def translate_errors(connection, doing):
    """Turn driver errors raised inside the block into DatabaseError."""
    try:
        yield
    except sa_exc.DBAPIError as exc:
        raise DatabaseError("%s failed on %s: %s" % (
            doing, safe_url(connection),
            describe_dbapi_error(exc, connection))) from exc
