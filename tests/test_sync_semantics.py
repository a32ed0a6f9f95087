"""What the sync and copy triggers do with real writes, on every engine.

Each test is one of the ways issue 8 found a rolling upgrade losing data
(partial writes, case-only changes, NULL against false, server defaults, a
column moved to another table, malformed values), with the values a user
relies on asserted.
"""

import json

import pytest
import sqlalchemy as sa

from manage import database, dialects, table_shape
from manage.column_sync import as_group
from manage.ops import declare_copy, declare_sync
from tests import helpers
from tests.test_rolling_upgrade import App


@pytest.fixture
def app(db_url):
    a = App(db_url)
    yield a
    a.close()


def install(url, *syncs, copy=None):
    """Create the triggers of ``syncs`` (one table) or of ``copy``, as
    ``manage db expand`` does: on a strict session, with the table's
    reflected shape."""
    engine = database.create_engine(url)
    try:
        with engine.begin() as conn:
            support = dialects.get(conn.dialect.name)
            support.prepare_data_session(conn)
            if copy is not None:
                shape = table_shape.reflect(conn, copy.table)
                statements = support.create_copy_sql(copy, shape)
            else:
                group = as_group(syncs)
                shape = table_shape.reflect(conn, group.table)
                statements = support.create_sync_sql(group, shape)
            for sql in statements:
                conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def ddl(url, *statements):
    engine = database.create_engine(url)
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def release_3_with(db_url, app, **row):
    """A release-2 database with one users row, expanded to release 3."""
    helpers.deploy(db_url, 2).sync()
    values = dict(id=1, display_name="ann", email="a@x.org",
                  email_domain="x.org", settings=None, address=None)
    values.update(row)
    app.write("INSERT INTO users (id, display_name, email, email_domain, "
              "settings, address) VALUES (:id, :display_name, :email, "
              ":email_domain, :settings, :address)", **values)
    new = helpers.deploy(db_url, 3)
    new.expand()
    return new


# -- input 1: a partial write to a multi-column sync
# ---------------------------
def test_partial_write_keeps_the_columns_it_did_not_touch(db_url, app):
    new = release_3_with(db_url, app,
                         settings='{"theme": "dark", "language": "fr"}')
    # New code changes one column before migrate reaches the row.
    app.write("UPDATE users SET theme = 'blue' WHERE id = 1")
    assert app.one("SELECT theme, language FROM users WHERE id = 1") == \
        ("blue", "fr")
    settings = json.loads(app.one("SELECT settings FROM users")[0])
    assert settings == {"theme": "blue", "language": "fr"}
    # And again on the other column, now that the row agrees.
    app.write("UPDATE users SET language = 'de' WHERE id = 1")
    assert json.loads(app.one("SELECT settings FROM users")[0]) == \
        {"theme": "blue", "language": "de"}
    new.migrate()
    new.contract()
    assert app.one("SELECT theme, language FROM users WHERE id = 1") == \
        ("blue", "de")


def test_partial_write_keeps_other_keys_of_the_document(db_url, app):
    new = release_3_with(
        db_url, app, settings='{"theme": "dark", "language": "fr", "tz": 1}')
    app.write("UPDATE users SET language = 'it' WHERE id = 1")
    assert json.loads(app.one("SELECT settings FROM users")[0]) == \
        {"theme": "dark", "language": "it", "tz": 1}
    new.migrate()
    assert app.one("SELECT theme, language FROM users") == ("dark", "it")


# -- input 2: case-, accent- and space-only changes
# ----------------------------
CASE_INSENSITIVE = {
    "sqlite": "TEXT COLLATE NOCASE",
    "mysql": "VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
    "postgresql": "citext",
}


def _case_insensitive_table(db_url, engine_name):
    if engine_name == "postgresql":
        ddl(db_url, "CREATE EXTENSION IF NOT EXISTS citext")
    kind = CASE_INSENSITIVE[engine_name]
    ddl(db_url, "CREATE TABLE people (id INTEGER PRIMARY KEY, "
                "name %s NULL, display_name %s NULL)" % (kind, kind))


@pytest.mark.parametrize("old_value, old_write, new_write", [
    ("alice", "Alice", "ALICE"),
    ("Jose", "José", "JOSÉ"),
    ("x", "x ", "x  "),
])
def test_case_and_accent_only_changes_are_carried(db_url, engine_name, app,
                                                  old_value, old_write,
                                                  new_write):
    if engine_name == "postgresql":
        pytest.importorskip("psycopg")
    try:
        _case_insensitive_table(db_url, engine_name)
    except sa.exc.DBAPIError as exc:  # citext needs its extension installed
        pytest.fail("cannot create a case-insensitive column: %s" % exc)
    install(db_url, declare_sync("people", old="name", new="display_name"))
    app.write("INSERT INTO people (id, name) VALUES (1, :v)", v=old_value)
    app.write("INSERT INTO people (id, display_name) VALUES (2, :v)",
              v=old_value)
    # Old code changes the case / accent / trailing space only.
    app.write("UPDATE people SET name = :v WHERE id = 1", v=old_write)
    # New code does the same on its side.
    app.write("UPDATE people SET display_name = :v WHERE id = 2", v=new_write)
    rows = app.rows("SELECT id, name, display_name FROM people ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, old_write, old_write),
                                        (2, new_write, new_write)]
    # Writing both sides with values that differ only in case conflicts.
    app.rejected("UPDATE people SET name = :a, display_name = :b "
                 "WHERE id = 2", a=old_value, b=old_write)


# -- input 7: NULL is not agreement with false
# ---------------------------------
def test_null_to_false_reaches_the_new_side(db_url, app):
    helpers.deploy(db_url, 2).sync()
    app.write("INSERT INTO users (id, display_name, email, email_domain) "
              "VALUES (1, 'ann', 'a@x.org', 'x.org')")
    app.write("INSERT INTO projects (id, owner_id, title, is_public) VALUES "
              "(1, 1, 'p', NULL)")
    new = helpers.deploy(db_url, 3)
    new.expand()
    new.migrate()
    assert app.one("SELECT is_public, visibility FROM projects") == \
        (None, None)
    app.write("UPDATE projects SET is_public = :f WHERE id = 1", f=False)
    assert app.one("SELECT visibility FROM projects") == ("private",)
    app.write("UPDATE projects SET is_public = NULL WHERE id = 1")
    app.write("UPDATE projects SET is_public = :t WHERE id = 1", t=True)
    assert app.one("SELECT visibility FROM projects") == ("public",)
    new.contract()
    assert app.one("SELECT visibility FROM projects") == ("public",)


# -- input 12: a column moved into another table, both ways
# ---------------------
def test_new_code_writes_the_new_table_only(db_url, app):
    new = release_3_with(db_url, app, address="1 Main St")
    app.write("INSERT INTO users (id, display_name, email, email_domain) "
              "VALUES (2, 'bo', 'b@y.org', 'y.org')")
    # New code: the address lives in user_addresses.
    app.write("INSERT INTO user_addresses (user_id, address) "
              "VALUES (2, '2 New Rd')")
    assert app.one("SELECT address FROM users WHERE id = 2") == ("2 New Rd",)
    app.write("UPDATE user_addresses SET address = '2 NEW RD' "
              "WHERE user_id = 2")
    assert app.one("SELECT address FROM users WHERE id = 2") == ("2 NEW RD",)
    # Old code still writes users.address; new code reads the new table.
    app.write("UPDATE users SET address = '2 new rd' WHERE id = 2")
    assert app.rows("SELECT user_id, address FROM user_addresses") == \
        [(2, "2 new rd")]
    app.write("DELETE FROM user_addresses WHERE user_id = 2")
    assert app.one("SELECT address FROM users WHERE id = 2") == (None,)
    app.write("INSERT INTO user_addresses (user_id, address) "
              "VALUES (2, '2 Final Rd')")
    new.migrate()  # copies the row from before expand
    new.contract()
    # After contract new code keeps writing, and nothing was lost.
    app.write("UPDATE user_addresses SET address = '1 Main Street' "
              "WHERE user_id = 1")
    assert app.rows("SELECT user_id, address FROM user_addresses "
                    "ORDER BY user_id") == [(1, "1 Main Street"),
                                            (2, "2 Final Rd")]


def test_copy_carries_case_only_changes(db_url, app):
    new = release_3_with(db_url, app, address="main st")
    new.migrate()
    app.write("UPDATE users SET address = 'Main St' WHERE id = 1")
    assert app.rows("SELECT address FROM user_addresses") == [("Main St",)]
    app.write("UPDATE user_addresses SET address = 'MAIN ST' "
              "WHERE user_id = 1")
    assert app.one("SELECT address FROM users") == ("MAIN ST",)


def test_copy_of_a_table_with_a_text_key(db_url, app):
    ddl(db_url,
        "CREATE TABLE hosts (name VARCHAR(64) PRIMARY KEY, note "
        "VARCHAR(64) NULL)",
        "CREATE TABLE host_notes (host VARCHAR(64) NOT NULL PRIMARY KEY, "
        "note VARCHAR(64) NOT NULL)")
    install(db_url, copy=declare_copy("hosts", "note", "host_notes",
                                      target_key="host", key="name"))
    app.write("INSERT INTO hosts (name, note) VALUES ('a', 'x')")
    app.write("INSERT INTO hosts (name) VALUES ('b')")
    app.write("INSERT INTO host_notes (host, note) VALUES ('b', 'y')")
    assert app.rows("SELECT name, note FROM hosts ORDER BY name") == \
        [("a", "x"), ("b", "y")]
    assert app.rows("SELECT host, note FROM host_notes ORDER BY host") == \
        [("a", "x"), ("b", "y")]


# -- server defaults
# -----------------------------------------------------------
def test_a_side_holding_only_its_default_yields(db_url, app):
    ddl(db_url, "CREATE TABLE items (id INTEGER PRIMARY KEY, "
                "label VARCHAR(32) DEFAULT 'none', "
                "title VARCHAR(32) NULL)")
    install(db_url, declare_sync("items", old="label", new="title"))
    # New code inserts its column only: the old one got its default.
    app.write("INSERT INTO items (id, title) VALUES (1, 'Lamp')")
    # Old code inserts its column only.
    app.write("INSERT INTO items (id, label) VALUES (2, 'Desk')")
    # Old code inserts nothing of the sync: its default is meant.
    app.write("INSERT INTO items (id) VALUES (3)")
    assert app.rows("SELECT id, label, title FROM items ORDER BY id") == [
        (1, "Lamp", "Lamp"), (2, "Desk", "Desk"), (3, "none", "none")]
    app.rejected("INSERT INTO items (id, label, title) VALUES "
                 "(4, 'a', 'b')")


# -- conflict rules
# ------------------------------------------------------------
def test_rule_both_sides_rejects_agreeing_double_writes(db_url, app):
    ddl(db_url, "CREATE TABLE t1 (id INTEGER PRIMARY KEY, a VARCHAR(9) NULL, "
                "b VARCHAR(9) NULL)")
    install(db_url, declare_sync("t1", "a", "b", reject="both_sides"))
    app.write("INSERT INTO t1 (id, a) VALUES (1, 'x')")
    app.rejected("INSERT INTO t1 (id, a, b) VALUES (2, 'y', 'y')")
    app.rejected("UPDATE t1 SET a = 'z', b = 'z' WHERE id = 1")
    app.write("UPDATE t1 SET b = 'w' WHERE id = 1")
    assert app.rows("SELECT id, a, b FROM t1") == [(1, "w", "w")]


def test_rule_null_rejects_null_on_either_side(db_url, app):
    ddl(db_url, "CREATE TABLE t2 (id INTEGER PRIMARY KEY, a VARCHAR(9) NULL, "
                "b VARCHAR(9) NULL)")
    install(db_url, declare_sync("t2", "a", "b", reject="null"))
    app.write("INSERT INTO t2 (id, a) VALUES (1, 'x')")
    with pytest.raises(sa.exc.DBAPIError, match="NULL written"):
        app.write("INSERT INTO t2 (id) VALUES (2)")
    with pytest.raises(sa.exc.DBAPIError, match="NULL written"):
        app.write("UPDATE t2 SET b = NULL WHERE id = 1")
    assert app.rows("SELECT id, a, b FROM t2") == [(1, "x", "x")]


def test_unknown_rule_is_refused():
    from manage.column_sync import ColumnSyncError
    with pytest.raises(ColumnSyncError, match="unknown conflict rule"):
        declare_sync("t", "a", "b", reject="never")


# -- table shapes
# --------------------------------------------------------------
def test_composite_and_text_keys(db_url, app):
    ddl(db_url, "CREATE TABLE members (org VARCHAR(16) NOT NULL, "
                "uid INTEGER NOT NULL, nick VARCHAR(32) NULL, "
                "handle VARCHAR(32) NULL, PRIMARY KEY (org, uid))")
    install(db_url, declare_sync("members", "nick", "handle"))
    app.write("INSERT INTO members (org, uid, nick) VALUES ('Acme', 1, 'a'), "
              "('acme', 1, 'b')" if app.engine.dialect.name != "mysql" else
              "INSERT INTO members (org, uid, nick) VALUES ('Acme', 1, 'a'), "
              "('Acme', 2, 'b')")
    app.write("UPDATE members SET handle = 'A' WHERE nick = 'a'")
    assert sorted(app.rows("SELECT nick, handle FROM members")) == \
        [("A", "A"), ("b", "b")]


def test_sqlite_without_rowid_table(sqlite_url):
    ddl(sqlite_url, "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT, w TEXT) "
                    "WITHOUT ROWID")
    install(sqlite_url, declare_sync("kv", "v", "w"))
    a = App(sqlite_url)
    try:
        a.write("INSERT INTO kv (k, v) VALUES ('one', 'x')")
        a.write("INSERT INTO kv (k, w) VALUES ('two', 'y')")
        a.write("UPDATE kv SET v = 'X' WHERE k = 'one'")
        assert a.rows("SELECT k, v, w FROM kv ORDER BY k") == \
            [("one", "X", "X"), ("two", "y", "y")]
    finally:
        a.close()


def test_a_table_with_triggers_of_its_own(db_url, engine_name, app):
    ddl(db_url, "CREATE TABLE notes (id INTEGER PRIMARY KEY, "
                "body VARCHAR(64) NULL, text VARCHAR(64) NULL, "
                "edits INTEGER NOT NULL DEFAULT 0)",
        "CREATE TABLE audit (note_id INTEGER, body VARCHAR(64))")
    own = {
        "sqlite": "CREATE TRIGGER notes_audit AFTER UPDATE ON notes "
                  "BEGIN INSERT INTO audit VALUES (NEW.id, NEW.body); END",
        "mysql": "CREATE TRIGGER notes_audit AFTER UPDATE ON notes FOR EACH "
                 "ROW INSERT INTO audit VALUES (NEW.id, NEW.body)",
        "postgresql": None,
    }[engine_name]
    if own is None:
        ddl(db_url,
            "CREATE FUNCTION notes_audit() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN INSERT INTO audit VALUES (NEW.id, NEW.body); "
            "RETURN NULL; END $$",
            "CREATE TRIGGER notes_audit AFTER UPDATE ON notes FOR EACH ROW "
            "EXECUTE FUNCTION notes_audit()")
    else:
        ddl(db_url, own)
    install(db_url, declare_sync("notes", "body", "text"))
    app.write("INSERT INTO notes (id, body) VALUES (1, 'draft')")
    app.write("UPDATE notes SET text = 'final' WHERE id = 1")
    assert app.one("SELECT body, text FROM notes") == ("final", "final")
    audit = app.rows("SELECT note_id, body FROM audit")
    if engine_name == "sqlite":
        # SQLite's AFTER triggers write the row a second time: the
        # application's own AFTER UPDATE trigger fires for those writes too
        # (and for the application's write, with its NEW values).
        assert (1, "final") in audit
    else:
        assert audit == [(1, "final")]


# -- input 6, the trigger half: a value the expression cannot convert
# ----------
def test_malformed_json_written_after_expand_is_refused(db_url, app):
    release_3_with(db_url, app, settings='{"theme": "dark"}')
    with pytest.raises(sa.exc.DBAPIError):
        app.write("UPDATE users SET settings = '{\"theme\": ' WHERE id = 1")
    with pytest.raises(sa.exc.DBAPIError):
        app.write("INSERT INTO users (id, display_name, email, email_domain,"
                  " settings) VALUES (2, 'b', 'b@y.org', 'y.org', 'no json')")
    assert app.rows("SELECT id, settings, theme FROM users") == \
        [(1, '{"theme": "dark"}', None)]


# -- column types: enums and JSON documents
# ------------------------------------
ENUM_TABLE = {
    "sqlite": ["CREATE TABLE tasks (id INTEGER PRIMARY KEY, "
               "state TEXT CHECK (state IN ('open', 'done')), "
               "status TEXT CHECK (status IN ('open', 'done', 'Open')))"],
    "mysql": ["CREATE TABLE tasks (id INTEGER PRIMARY KEY, "
              "state ENUM('open', 'done') NULL, "
              "status ENUM('open', 'done', 'waiting') NULL)"],
    "postgresql": ["CREATE TYPE task_state AS ENUM ('open', 'done')",
                   "CREATE TYPE task_status AS ENUM ('open', 'done', "
                   "'waiting')",
                   "CREATE TABLE tasks (id INTEGER PRIMARY KEY, "
                   "state task_state NULL, status task_status NULL)"],
}


def test_enum_columns_of_two_types(db_url, engine_name, app):
    ddl(db_url, *ENUM_TABLE[engine_name])
    install(db_url, declare_sync("tasks", "state", "status"))
    app.write("INSERT INTO tasks (id, state) VALUES (1, 'open')")
    app.write("INSERT INTO tasks (id, status) VALUES (2, 'done')")
    app.write("UPDATE tasks SET state = 'done' WHERE id = 1")
    app.write("UPDATE tasks SET status = 'open' WHERE id = 2")
    assert app.rows("SELECT id, state, status FROM tasks ORDER BY id") == \
        [(1, "done", "done"), (2, "open", "open")]


def test_postgresql_trigger_of_its_own_running_after_the_sync(db_url,
                                                              engine_name,
                                                              app):
    """PostgreSQL runs BEFORE triggers in name order: one that sorts after
    manage's and changes a synced column is refused at expand."""
    if engine_name != "postgresql":
        pytest.skip("PostgreSQL orders triggers by name")
    from manage.exceptions import ShapeError
    helpers.deploy(db_url, 1).sync()
    ddl(db_url,
        "CREATE FUNCTION trim_name() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN NEW.name := trim(NEW.name); RETURN NEW; END $$",
        "CREATE TRIGGER zz_trim_name BEFORE INSERT OR UPDATE ON users "
        "FOR EACH ROW EXECUTE FUNCTION trim_name()")
    before = helpers.schema_snapshot(db_url)
    with pytest.raises(ShapeError, match="zz_trim_name.*users.name"):
        helpers.deploy(db_url, 2).expand()
    assert helpers.schema_snapshot(db_url) == before
    # Renamed to run first, it is accepted and its change is synced.
    ddl(db_url, "ALTER TRIGGER zz_trim_name ON users RENAME TO a_trim_name")
    helpers.deploy(db_url, 2).expand()
    app.write("INSERT INTO users (id, name, email) VALUES (1, ' ann ', "
              "'a@x.org')")
    assert app.one("SELECT name, display_name FROM users") == ("ann", "ann")
