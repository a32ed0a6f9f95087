"""The throwaway database servers of tests/dbservers.py, exercised against real
MariaDB and PostgreSQL.
"""

import os
import socket

import pytest
import sqlalchemy as sa

from tests.dbservers import (
    MariaDBServer,
    PostgreSQLServer,
    ServerUnavailable,
    unique_db_name,
)

IN_CI = os.environ.get("CI", "").lower() in (
    "1",
    "true",
    "yes",
)  # as tests/conftest.py

TRIGGER_DDL = {
    "mariadb": [
        "CREATE TABLE item (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, "
        "name_upper VARCHAR(50))",
        "CREATE TRIGGER item_bi BEFORE INSERT ON item FOR EACH ROW "
        "SET NEW.name_upper = UPPER(NEW.name)",
    ],
    "postgresql": [
        "CREATE TABLE item (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, "
        "name_upper VARCHAR(50))",
        "CREATE FUNCTION item_upper() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN NEW.name_upper := upper(NEW.name); RETURN NEW; END $$",
        "CREATE TRIGGER item_bi BEFORE INSERT ON item FOR EACH ROW "
        "EXECUTE FUNCTION item_upper()",
    ],
}


def start_or_skip(server):
    try:
        return server.start()
    except ServerUnavailable as exc:
        if IN_CI:
            pytest.fail(f"CI=true and {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def mariadb():
    with start_or_skip(MariaDBServer()) as srv:
        yield srv


@pytest.fixture(scope="module")
def postgresql():
    with start_or_skip(PostgreSQLServer()) as srv:
        yield srv


@pytest.fixture(params=["mariadb", "postgresql"])
def server(request):
    return request.getfixturevalue(request.param)


def test_app_user_table_trigger_roundtrip_in_two_databases(server):
    urls = [
        server.create_database(unique_db_name("roundtrip")) for _ in range(2)
    ]
    assert all(
        url.startswith(("mysql+pymysql://app:", "postgresql+psycopg://app:"))
        for url in urls
    )
    assert urls[0] != urls[1]
    for n, url in enumerate(urls):
        engine = sa.create_engine(url)
        try:
            with engine.begin() as conn:
                for ddl in TRIGGER_DDL[server.kind]:
                    conn.exec_driver_sql(ddl)
                conn.execute(
                    sa.text("INSERT INTO item (id, name) VALUES (:id, :name)"),
                    {"id": n, "name": f"héllo 🙂 {n}"},
                )
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT id, name, name_upper FROM item")
                ).all()
        finally:
            engine.dispose()
        assert rows == [
            (n, f"héllo 🙂 {n}", f"HÉLLO 🙂 {n}")
        ]  # one row per database: they are separate


def test_admin_execute_returns_rows_or_none_and_keeps_percent(server):
    assert server.admin_execute("SELECT 'a%b'") == [("a%b",)]
    name = unique_db_name("scratch")
    assert server.admin_execute(f"CREATE DATABASE {name}") is None
    server.drop_database(name)
    server.drop_database(name)  # idempotent


def test_drop_database_removes_it(server):
    name = unique_db_name("dropme")
    server.create_database(name)
    listing = {
        "mariadb": "SELECT schema_name FROM information_schema.schemata",
        "postgresql": "SELECT datname FROM pg_database",
    }[server.kind]
    assert (name,) in server.admin_execute(listing)
    server.drop_database(name)
    assert (name,) not in server.admin_execute(listing)


def test_passwords_are_checked_over_tcp(server):
    url = sa.make_url(server.app_url()).set(password="wrong")
    engine = sa.create_engine(url)
    with pytest.raises(sa.exc.OperationalError):
        engine.connect().close()
    engine.dispose()


def test_mariadb_has_binlog_and_app_lacks_super(mariadb):
    assert mariadb.admin_execute(
        "SELECT @@log_bin, @@log_bin_trust_function_creators, "
        "@@character_set_server"
    ) == [(1, 1, "utf8mb4")]
    engine = sa.create_engine(
        mariadb.create_database(unique_db_name("nosuper"))
    )
    try:
        with engine.connect() as conn:
            grants = " ".join(
                r[0] for r in conn.exec_driver_sql("SHOW GRANTS").all()
            )
            assert "SUPER" not in grants and "PROCESS" in grants
            conn.exec_driver_sql(
                "SHOW ENGINE INNODB STATUS"
            ).all()  # PROCESS is enough for status
            with pytest.raises(
                sa.exc.OperationalError, match="1227"
            ):  # access denied; you need SUPER
                conn.exec_driver_sql(
                    "SET GLOBAL log_bin_trust_function_creators = 1"
                )
    finally:
        engine.dispose()


def test_mariadb_app_user_only_reaches_its_databases(mariadb):
    other = unique_db_name("other")
    mariadb.admin_execute(
        f"CREATE DATABASE {other}"
    )  # made by root, not granted to app
    engine = sa.create_engine(mariadb.app_url(other))
    try:
        with pytest.raises(sa.exc.OperationalError, match="1044"):
            engine.connect().close()
    finally:
        engine.dispose()
        mariadb.drop_database(other)


def test_mariadb_client_tools_are_reported(mariadb):
    assert "mariadbd" in mariadb.binaries
    assert {"mariadb-dump", "mysqldump"} & set(mariadb.binaries)
    assert mariadb.socket.exists() and mariadb.datadir.is_dir()


def test_postgresql_app_user_is_not_superuser(postgresql):
    engine = sa.create_engine(
        postgresql.create_database(unique_db_name("nosuper"))
    )
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql(
                "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                "WHERE rolname = current_user"
            ).one() == (False, False, False)
            assert (
                conn.exec_driver_sql(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database "
                    "WHERE datname = current_database()"
                ).scalar()
                == "app"
            )
            with pytest.raises(
                sa.exc.ProgrammingError, match="permission denied"
            ):
                conn.exec_driver_sql("SELECT pg_read_file('postgresql.conf')")
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "cls", [MariaDBServer, PostgreSQLServer], ids=["mariadb", "postgresql"]
)
def test_stop_ends_the_process_and_closes_the_port(cls):
    with start_or_skip(cls()) as srv:
        pid, port, tmpdir = srv.pid, srv.port, srv.tmpdir
        assert srv.running and tmpdir.is_dir()
        os.kill(pid, 0)  # alive
    assert not srv.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert not tmpdir.exists()
    srv.stop()  # a second stop is harmless
