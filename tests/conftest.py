"""Fixtures: one throwaway server per engine per session, one database per
test.  ``db_url`` is parametrized over the engines in MANAGE_TEST_ENGINES
(default: all three).  SQLite needs nothing; MariaDB and PostgreSQL servers
are started by the suite on 127.0.0.1.  A server that cannot start skips its
tests with the reason, except under CI (CI=true), where that is a failure.
"""

import os
import signal
import sys

import pytest

from tests.dbservers import (MariaDBServer, PostgreSQLServer,
                             ServerUnavailable, unique_db_name)

ALL_ENGINES = ("sqlite", "mysql", "postgresql")
ENGINES = tuple(e for e in os.environ.get(
    "MANAGE_TEST_ENGINES", ",".join(ALL_ENGINES)).split(",") if e)
SERVERS = {"mysql": MariaDBServer, "postgresql": PostgreSQLServer}
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_started = {}


def server_for(engine):
    """The session's server for an engine, started on first use."""
    if engine not in _started:
        server = SERVERS[engine]()
        try:
            server.start()
        except ServerUnavailable as exc:
            _started[engine] = exc
        else:
            _started[engine] = server
    found = _started[engine]
    if isinstance(found, Exception):
        message = "%s server unavailable: %s" % (engine, found)
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def pytest_configure(config):
    # A run ended by SIGTERM (a timeout, a CI cancel) exits normally, so
    # that the servers it started are stopped by their atexit handlers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))


def pytest_sessionfinish(session, exitstatus):
    for server in _started.values():
        if not isinstance(server, Exception):
            server.stop()


def new_database(engine, tmp_path):
    if engine == "sqlite":
        return "sqlite:///%s" % (tmp_path / "test.sqlite"), None
    server = server_for(engine)
    name = unique_db_name("t")
    return server.create_database(name), (server, name)


@pytest.fixture(params=ENGINES)
def engine_name(request):
    return request.param


@pytest.fixture
def db_url(engine_name, tmp_path):
    """A fresh, empty database of each engine."""
    url, owner = new_database(engine_name, tmp_path)
    yield url
    if owner is not None:
        server, name = owner
        server.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path):
    return "sqlite:///%s" % (tmp_path / "test.sqlite")
