"""Table shapes at expand (manage.shapes): what is refused, what works.

Each refusal runs ``manage db expand`` on a real database holding rows and
asserts the exit code, the one line on stderr (table, column(s), reason)
and that nothing changed: on SQLite and PostgreSQL the schema and the rows
are exactly as before; on MySQL, whose DDL is not transactional, only the
column the revision added before the refused call stays, as the message
says.  Each supported shape runs its expand and real writes through the
triggers.
"""

import os
import shutil
import textwrap

import pytest

from manage.repository import bundled_path
from tests import helpers

HEADER = '''"""A test revision."""
import sqlalchemy as sa
from alembic import op

from manage.ops import (add_column, copy_column_to_table, declare_copy,
                        declare_sync, sync_columns)

revision = "%(rev)s"
down_revision = %(down)r
branch_labels = %(labels)r
depends_on = None


def upgrade():
'''


class Repo:
    """A small repository of the test's own: a first expand revision that
    makes the tables, then revisions added one at a time."""

    def __init__(self, tmp_path, url, tables):
        self.url = url
        self.path = tmp_path / "repo"
        shutil.copytree(os.path.join(bundled_path(), "migrations"),
                        self.path / "migrations")
        (self.path / "expand").mkdir()
        (self.path / "contract").mkdir()
        (self.path / "contract" / "s1_contract01_root.py").write_text(
            '"""Root."""\nrevision = "s1_contract01"\ndown_revision = None\n'
            'branch_labels = ("contract",)\ndepends_on = "s1_expand01"\n\n\n'
            'def upgrade():\n    pass\n')
        self.count = 0
        self.conf = helpers.write_config(
            tmp_path, url, repository=str(self.path),
            data_migration_namespace="manage.test_shapes_none")
        self.add("\n".join("op.execute(%r)" % sql for sql in tables))

    def add(self, body):
        """Add the next expand revision with this upgrade() body."""
        self.count += 1
        rev = "s%d_expand01" % self.count
        down = None if self.count == 1 else "s%d_expand01" % (self.count - 1)
        text = HEADER % dict(rev=rev, down=down, labels=(
            ("expand",) if self.count == 1 else None))
        text += textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"
        (self.path / "expand" / ("%s_t.py" % rev)).write_text(text)
        return rev

    def replace(self, body):
        """Rewrite the latest revision's body (a fixed revision)."""
        self.count -= 1
        return self.add(body)

    def expand(self):
        return helpers.run(["db", "expand"], self.conf)


def state(url):
    snap = helpers.schema_snapshot(url)
    rows = {t: sorted(helpers.query(url, "SELECT * FROM %s" % t), key=repr)
            for t in snap if not t.startswith("<") and t != "manage_version"}
    return snap, rows


def refused(repo, engine, body, message, added=()):
    """Expand a revision that must be refused; ``added``: the columns
    (table, column) it adds before the refused call, column None for a
    table it creates (they stay on MySQL).
    Returns the error line."""
    before = state(repo.url)
    repo.add(body)
    r = repo.expand()
    assert r.code == 1, (r.out, r.err)
    lines = r.err.splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("manage: error: "), r.err
    for fragment in (message,) if isinstance(message, str) else message:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in r.err
    after = state(repo.url)
    if engine == "mysql":
        assert "MySQL commits each schema change at once, so what the " \
               "revision did before this call stays" in lines[0]
        snap, rows = after
        for table, column in added:
            if column is None:      # a table the revision created
                assert table in snap
                del snap[table], rows[table]
                continue
            names = [c[0] for c in snap[table]["columns"]]
            assert column in names
            index = names.index(column)
            snap[table]["columns"].pop(index)
            rows[table] = sorted((r[:index] + r[index + 1:]
                                  for r in rows[table]), key=repr)
        assert (snap, rows) == before
    else:
        assert "Nothing was changed: the revision was rolled back" \
            in lines[0]
        assert after == before
    return lines[0]


def _ddl(engine, **per_engine):
    return per_engine.get(engine, per_engine.get("default"))


USERS = {
    "default": "CREATE TABLE users (id INTEGER PRIMARY KEY, "
               "name VARCHAR(100), bio TEXT, n BIGINT, amount NUMERIC(10,2),"
               " flag BOOLEAN, email VARCHAR(100) NOT NULL)",
}


@pytest.fixture
def users(tmp_path, db_url, engine_name):
    repo = Repo(tmp_path, db_url, [_ddl(engine_name, **USERS)])
    r = repo.expand()
    assert r.code == 0, r.err
    helpers.query(db_url, "INSERT INTO users (id, name, bio, n, amount, "
                          "flag, email) VALUES (1, 'ann', 'x', 7, 1.50, "
                          "TRUE, 'ann@x.org'), (2, NULL, NULL, NULL, NULL, "
                          "NULL, 'bob@x.org')")
    return repo


# -- the table ---------------------------------------------------------------
def test_missing_table(users, engine_name):
    refused(users, engine_name, 'sync_columns("members", old="name", '
            'new="display_name")',
            "sync members.name -> members.display_name refused: table "
            "members does not exist")


def test_a_view(users, engine_name):
    helpers.query(users.url, "CREATE VIEW people AS SELECT id, name FROM "
                             "users")
    refused(users, engine_name, 'sync_columns("people", old="name", '
            'new="id")', "sync people.name -> people.id refused: people is "
            "a view, not a table")


def test_no_key(tmp_path, db_url, engine_name):
    repo = Repo(tmp_path, db_url, [
        "CREATE TABLE events (at_id INTEGER, name VARCHAR(50), "
        "label VARCHAR(50))",
        # A unique key with a nullable column cannot be walked either.
        "CREATE UNIQUE INDEX events_at ON events (at_id)"])
    assert repo.expand().code == 0
    helpers.query(db_url, "INSERT INTO events VALUES (1, 'a', NULL)")
    refused(repo, engine_name, 'sync_columns("events", old="name", '
            'new="label")', "sync events.name -> events.label refused: "
            "table events has no primary key and no unique key of NOT NULL "
            "columns; the backfill walks the table by its key")


def test_unique_not_null_key_is_enough(tmp_path, db_url):
    repo = Repo(tmp_path, db_url, [
        "CREATE TABLE events (code VARCHAR(20) NOT NULL, name VARCHAR(50))",
        "CREATE UNIQUE INDEX events_code ON events (code)"])
    assert repo.expand().code == 0
    helpers.query(db_url, "INSERT INTO events VALUES ('e1', 'launch')")
    repo.add('add_column("events", sa.Column("label", sa.String(50)))\n'
             'sync_columns("events", old="name", new="label")')
    r = repo.expand()
    assert r.code == 0, r.err
    helpers.query(db_url, "INSERT INTO events (code, label) VALUES "
                          "('e2', 'Party')")
    helpers.query(db_url, "UPDATE events SET name = 'Launch' WHERE code = "
                          "'e1'")
    assert helpers.query(db_url, "SELECT code, name, label FROM events "
                                 "ORDER BY code") == [
        ("e1", "Launch", "Launch"), ("e2", "Party", "Party")]


# -- the columns -------------------------------------------------------------
def test_column_typo(users, engine_name):
    refused(users, engine_name,
            'add_column("users", sa.Column("display_name", sa.String(100)))'
            '\nsync_columns("users", old="nmae", new="display_name")',
            "sync users.nmae -> users.display_name refused: table users has "
            "no column nmae", added=[("users", "display_name")])


def test_expression_names_a_missing_column(users, engine_name):
    refused(users, engine_name,
            'add_column("users", sa.Column("domain", sa.String(100)))\n'
            'sync_columns("users", old="email", new="domain", '
            'old_to_new="lower({emial})", new_to_old="{email}", '
            'check="old_to_new")',
            "sync users.email -> users.domain refused: table users has no "
            "column emial", added=[("users", "domain")])


@pytest.mark.parametrize("new_type, message", [
    ("sa.String(50)", "users.display_name VARCHAR(50) cannot hold every "
     "value of users.name VARCHAR(100): up to 100 characters, at most 50 "
     "fit; change the type or map with an expression"),
    ("sa.String(200)", "users.name VARCHAR(100) cannot hold every value of "
     "users.display_name VARCHAR(200): up to 200 characters, at most 100 "
     "fit"),
])
def test_string_length_both_ways(users, engine_name, new_type, message):
    refused(users, engine_name,
            'add_column("users", sa.Column("display_name", %s))\n'
            'sync_columns("users", old="name", new="display_name")'
            % new_type, message, added=[("users", "display_name")])


def test_text_into_varchar(users, engine_name):
    line = refused(users, engine_name,
                   'add_column("users", sa.Column("about", '
                   'sa.String(255)))\nsync_columns("users", old="bio", '
                   'new="about")', "cannot hold every value of users.bio "
                   "TEXT: up to ", added=[("users", "about")])
    assert "users.about VARCHAR(255) cannot hold" in line


def test_widening_with_a_backward_expression(users, engine_name):
    """A longer new column is supported when the way back is explicit."""
    users.add('add_column("users", sa.Column("display_name", '
              'sa.String(200)))\n'
              'sync_columns("users", old="name", new="display_name", '
              'new_to_old="substr({display_name}, 1, 100)")')
    r = users.expand()
    assert r.code == 0, r.err
    helpers.query(users.url, "INSERT INTO users (id, email, display_name) "
                             "VALUES (3, 'c@x.org', :v)", v="c" * 150)
    assert helpers.query(users.url, "SELECT name, display_name FROM users "
                                    "WHERE id = 3") == [("c" * 100,
                                                         "c" * 150)]


def test_bigint_into_integer(users, engine_name):
    refused(users, engine_name,
            'add_column("users", sa.Column("n32", sa.Integer))\n'
            'sync_columns("users", old="n", new="n32")',
            ("sync users.n -> users.n32 refused: users.n32 INTEGER",
             "cannot hold every value of users.n BIGINT",
             ": integers from -9223372036854775808 to 9223372036854775807, "
             "only -2147483648 to 2147483647 fit"),
            added=[("users", "n32")])


@pytest.mark.parametrize("numeric, reason", [
    ("sa.Numeric(8, 2)", "8 integer digits, at most 6 fit"),
    ("sa.Numeric(10, 1)", "2 decimal places, 1 kept"),
])
def test_numeric_precision_and_scale(users, engine_name, numeric, reason):
    refused(users, engine_name,
            'add_column("users", sa.Column("amount2", %s))\n'
            'sync_columns("users", old="amount", new="amount2")' % numeric,
            reason, added=[("users", "amount2")])


def test_nullable_into_not_null(users, engine_name):
    refused(users, engine_name,
            'add_column("users", sa.Column("nick", sa.String(100), '
            'nullable=False, server_default="x"))\n'
            'sync_columns("users", old="name", new="nick")',
            "users.nick VARCHAR(100) cannot hold every value of users.name "
            "VARCHAR(100): name may be NULL and nick is NOT NULL; make nick "
            "nullable until contract, or map with an expression",
            added=[("users", "nick")])


def test_boolean_and_integer(users, engine_name):
    if engine_name == "mysql":
        pytest.skip("MySQL's BOOLEAN is TINYINT(1): an integer")
    refused(users, engine_name,
            'add_column("users", sa.Column("flag_n", sa.Integer))\n'
            'sync_columns("users", old="flag", new="flag_n")',
            "users.flag_n INTEGER cannot hold every value of users.flag "
            "BOOLEAN: integer and boolean are different kinds of value",
            added=[("users", "flag_n")])


def test_text_into_json(users, engine_name):
    if engine_name == "mysql":
        pytest.skip("MariaDB's JSON is LONGTEXT")
    refused(users, engine_name,
            'add_column("users", sa.Column("doc", sa.JSON))\n'
            'sync_columns("users", old="bio", new="doc")',
            "cannot hold every value of users.bio TEXT: JSON and text are "
            "different kinds of value", added=[("users", "doc")])


def test_json_and_jsonb(tmp_path, db_url, engine_name):
    if engine_name != "postgresql":
        pytest.skip("json and jsonb are PostgreSQL's")
    repo = Repo(tmp_path, db_url, ["CREATE TABLE docs (id INTEGER PRIMARY "
                                   "KEY, body json, body2 jsonb)"])
    assert repo.expand().code == 0
    refused(repo, engine_name, 'sync_columns("docs", old="body", '
            'new="body2")', "docs.body2 JSONB cannot hold every value of "
            "docs.body JSON: JSON and JSONB store a document differently")


def test_generated_column(tmp_path, db_url, engine_name):
    repo = Repo(tmp_path, db_url, [
        "CREATE TABLE items (id INTEGER PRIMARY KEY, price INTEGER, "
        "total INTEGER GENERATED ALWAYS AS (price * 2) %s)" % (
            "STORED" if engine_name == "postgresql" else "VIRTUAL")])
    assert repo.expand().code == 0
    refused(repo, engine_name, 'sync_columns("items", old="price", '
            'new="total")', "sync items.price -> items.total refused: "
            "items.total is a generated column, which cannot be written by "
            "the triggers")


def test_old_not_null_without_default_on_sqlite(users, engine_name):
    body = ('add_column("users", sa.Column("contact", sa.String(100), '
            'nullable=False, server_default=""))\n'
            'sync_columns("users", old="email", new="contact")')
    if engine_name != "sqlite":
        users.add(body)
        r = users.expand()
        assert r.code == 0, r.err
        # New code inserts without the old column: the trigger fills it.
        helpers.query(users.url, "INSERT INTO users (id, contact) VALUES "
                                 "(3, 'c@x.org')")
        assert helpers.query(users.url, "SELECT email, contact FROM users "
                                        "WHERE id = 3") == [("c@x.org",
                                                             "c@x.org")]
        return
    refused(users, engine_name, body,
            "sync users.email -> users.contact refused: old column "
            "users.email is NOT NULL without a server default, and sqlite "
            "checks NOT NULL before the sync triggers fill it, so new "
            "code's inserts would fail")


def test_refused_then_fixed(users, engine_name):
    """A refused revision, fixed, runs: on MySQL the column it added before
    the refusal is taken as it is (manage.ops.add_column)."""
    refused(users, engine_name,
            'add_column("users", sa.Column("display_name", sa.String(100)))'
            '\nsync_columns("users", old="nmae", new="display_name")',
            "no column nmae", added=[("users", "display_name")])
    users.replace('add_column("users", sa.Column("display_name", '
                  'sa.String(100)))\n'
                  'sync_columns("users", old="name", new="display_name")')
    r = users.expand()
    assert r.code == 0, r.err
    helpers.query(users.url, "UPDATE users SET name = 'Ann' WHERE id = 1")
    assert helpers.query(users.url, "SELECT display_name FROM users WHERE "
                                    "id = 1") == [("Ann",)]


# -- MySQL: character sets, engines, enums ------------------------------------
@pytest.fixture
def mysql_repo(tmp_path, db_url, engine_name):
    if engine_name != "mysql":
        pytest.skip("MySQL/MariaDB only")
    return lambda *tables: _expanded(Repo(tmp_path, db_url, list(tables)))


def _expanded(repo):
    r = repo.expand()
    assert r.code == 0, r.err
    return repo


def test_utf8mb4_into_latin1(mysql_repo):
    repo = mysql_repo("CREATE TABLE notes (id INT PRIMARY KEY, body "
                      "VARCHAR(100) CHARACTER SET utf8mb4, body1 VARCHAR(100)"
                      " CHARACTER SET latin1) ENGINE=InnoDB")
    helpers.query(repo.url, "INSERT INTO notes (id, body) VALUES (1, 'x')")
    refused(repo, "mysql", 'sync_columns("notes", old="body", new="body1")',
            ("notes.body1 VARCHAR(100) CHARACTER SET latin1",
             "cannot hold every value of notes.body VARCHAR(100)",
             ": character set latin1 cannot hold every character of utf8mb4"))


def test_varchar_into_text_bytes(mysql_repo):
    """TINYTEXT holds 255 bytes: 100 utf8mb4 characters may not fit."""
    repo = mysql_repo("CREATE TABLE notes (id INT PRIMARY KEY, body "
                      "VARCHAR(100), body1 TINYTEXT) CHARACTER SET utf8mb4")
    refused(repo, "mysql", 'sync_columns("notes", old="body", new="body1",'
            ' new_to_old="{body1}")', ("notes.body1 TINYTEXT",
            "cannot hold every value of notes.body VARCHAR(100)",
            ": values of up to 400 bytes, at most 255 bytes fit"))


@pytest.mark.parametrize("storage", ["MyISAM", "MEMORY", "Aria"])
def test_engine_without_transactions(mysql_repo, storage):
    repo = mysql_repo("CREATE TABLE logs (id INT PRIMARY KEY, msg "
                      "VARCHAR(50), text1 VARCHAR(50)) ENGINE=%s" % storage)
    helpers.query(repo.url, "INSERT INTO logs VALUES (1, 'up', NULL)")
    refused(repo, "mysql", 'sync_columns("logs", old="msg", new="text1")',
            "sync logs.msg -> logs.text1 refused: table logs uses the %s "
            "engine, which has no transactions" % storage)


def test_enum_values(tmp_path, db_url, engine_name):
    if engine_name == "sqlite":
        pytest.skip("SQLite has no enum type")
    if engine_name == "mysql":
        tables = ["CREATE TABLE tickets (id INT PRIMARY KEY, state "
                  "ENUM('open','closed','spam'), state2 ENUM('open',"
                  "'closed'))"]
    else:
        tables = ["CREATE TYPE st3 AS ENUM ('open', 'closed', 'spam')",
                  "CREATE TYPE st2 AS ENUM ('open', 'closed')",
                  "CREATE TABLE tickets (id INTEGER PRIMARY KEY, state st3,"
                  " state2 st2)"]
    repo = Repo(tmp_path, db_url, tables)
    assert repo.expand().code == 0
    helpers.query(db_url, "INSERT INTO tickets VALUES (1, 'spam', NULL)")
    refused(repo, engine_name, 'sync_columns("tickets", old="state", '
            'new="state2", new_to_old="{state}", check="old_to_new")',
            "cannot hold every value of tickets.state")


# -- SQLite and PostgreSQL storage --------------------------------------------
def test_sqlite_without_rowid(tmp_path, sqlite_url):
    repo = Repo(tmp_path, sqlite_url, [
        "CREATE TABLE tags (code TEXT PRIMARY KEY, name TEXT) WITHOUT "
        "ROWID"])
    assert repo.expand().code == 0
    helpers.query(sqlite_url, "INSERT INTO tags VALUES ('a', 'alpha')")
    repo.add('add_column("tags", sa.Column("label", sa.Text))\n'
             'sync_columns("tags", old="name", new="label")')
    r = repo.expand()
    assert r.code == 0, r.err
    helpers.query(sqlite_url, "INSERT INTO tags (code, label) VALUES "
                              "('b', 'Beta')")
    helpers.query(sqlite_url, "INSERT INTO tags (code, name) VALUES "
                              "('c', 'gamma')")
    helpers.query(sqlite_url, "UPDATE tags SET name = 'Alpha' WHERE code = "
                              "'a'")
    helpers.query(sqlite_url, "UPDATE tags SET label = 'GAMMA' WHERE code = "
                              "'c'")
    assert helpers.query(sqlite_url, "SELECT code, name, label FROM tags "
                                     "ORDER BY code") == [
        ("a", "Alpha", "Alpha"), ("b", "Beta", "Beta"),
        ("c", "GAMMA", "GAMMA")]


def test_sqlite_virtual_table(tmp_path, sqlite_url):
    repo = Repo(tmp_path, sqlite_url, [
        "CREATE VIRTUAL TABLE docs USING fts5(title, body)"])
    assert repo.expand().code == 0
    refused(repo, "sqlite", 'sync_columns("docs", old="title", '
            'new="body")', "sync docs.title -> docs.body refused: table docs "
            "is a virtual table, on which SQLite allows no triggers")


def test_postgresql_partitioned_and_unlogged(tmp_path, db_url, engine_name):
    if engine_name != "postgresql":
        pytest.skip("PostgreSQL only")
    repo = Repo(tmp_path, db_url, [
        "CREATE TABLE orders (org INTEGER NOT NULL, id INTEGER NOT NULL, "
        "note TEXT, PRIMARY KEY (org, id)) PARTITION BY LIST (org)",
        "CREATE TABLE orders_1 PARTITION OF orders FOR VALUES IN (1)",
        "CREATE TABLE orders_2 PARTITION OF orders FOR VALUES IN (2)",
        "CREATE UNLOGGED TABLE scratch (id INTEGER PRIMARY KEY, a TEXT)"])
    assert repo.expand().code == 0
    helpers.query(db_url, "INSERT INTO orders VALUES (1, 1, 'one')")
    repo.add('add_column("orders", sa.Column("memo", sa.Text))\n'
             'sync_columns("orders", old="note", new="memo")\n'
             'add_column("scratch", sa.Column("b", sa.Text))\n'
             'sync_columns("scratch", old="a", new="b")')
    r = repo.expand()
    assert r.code == 0, r.err
    helpers.query(db_url, "INSERT INTO orders (org, id, memo) VALUES "
                          "(2, 1, 'two')")
    # Straight into a partition: its cloned trigger syncs too.
    helpers.query(db_url, "INSERT INTO orders_1 (org, id, note) VALUES "
                          "(1, 2, 'three')")
    helpers.query(db_url, "UPDATE orders SET note = 'One' WHERE id = 1 AND "
                          "org = 1")
    # A partition attached after expand gets the trigger as well.
    helpers.query(db_url, "CREATE TABLE orders_3 PARTITION OF orders FOR "
                          "VALUES IN (3)")
    helpers.query(db_url, "INSERT INTO orders (org, id, note) VALUES "
                          "(3, 1, 'four')")
    helpers.query(db_url, "INSERT INTO scratch (id, b) VALUES (1, 'z')")
    assert helpers.query(db_url, "SELECT org, id, note, memo FROM orders "
                                 "ORDER BY org, id") == [
        (1, 1, "One", "One"), (1, 2, "three", "three"), (2, 1, "two", "two"),
        (3, 1, "four", "four")]
    assert helpers.query(db_url, "SELECT a, b FROM scratch") == [("z", "z")]


def test_mariadb_system_versioned(mysql_repo):
    repo = mysql_repo("CREATE TABLE prices (id INT PRIMARY KEY, amount "
                      "INT) WITH SYSTEM VERSIONING")
    helpers.query(repo.url, "INSERT INTO prices VALUES (1, 5)")
    repo.add('op.execute("SET STATEMENT system_versioning_alter_history = '
             'KEEP FOR ALTER TABLE prices ADD COLUMN cents INT")\n'
             'sync_columns("prices", old="amount", new="cents")')
    r = repo.expand()
    assert r.code == 0, r.err
    helpers.query(repo.url, "INSERT INTO prices (id, cents) VALUES (2, 7)")
    helpers.query(repo.url, "UPDATE prices SET amount = 6 WHERE id = 1")
    assert helpers.query(repo.url, "SELECT id, amount, cents FROM prices "
                                   "ORDER BY id") == [(1, 6, 6), (2, 7, 7)]


# -- copies
# --------------------------------------------------------------------
@pytest.fixture
def people(tmp_path, db_url):
    repo = Repo(tmp_path, db_url, [
        "CREATE TABLE people (id INTEGER PRIMARY KEY, address VARCHAR(100),"
        " phone VARCHAR(20) NOT NULL)"])
    assert repo.expand().code == 0
    helpers.query(db_url, "INSERT INTO people VALUES (1, 'Elm', '555')")
    return repo


COPY = ('copy_column_to_table(declare_copy("people", "%s", "addresses", '
        'target_key="person_id"%s))')


def _addresses(columns):
    return ('op.create_table("addresses", sa.Column("id", sa.Integer, '
            'primary_key=True), %s)\n' % columns)


def test_copy_target_key_not_unique(people, engine_name):
    refused(people, engine_name, _addresses(
        'sa.Column("person_id", sa.Integer, nullable=False), '
        'sa.Column("address", sa.String(100))') + COPY % ("address", ""),
        "copy people.address -> addresses.address refused: "
        "addresses.person_id has no unique constraint or index of its own: "
        "the copy trigger upserts the row it names",
        added=[("addresses", None)])


def test_copy_moved_column_not_null(people, engine_name):
    refused(people, engine_name, _addresses(
        'sa.Column("person_id", sa.Integer, unique=True), '
        'sa.Column("phone", sa.String(20))') + COPY % ("phone", ""),
        "copy people.phone -> addresses.phone refused: the moved column "
        "people.phone is NOT NULL: new code inserts people rows without it",
        added=[("addresses", None)])


def test_copy_target_other_not_null_column(people, engine_name):
    refused(people, engine_name, _addresses(
        'sa.Column("person_id", sa.Integer, unique=True), '
        'sa.Column("address", sa.String(100)), '
        'sa.Column("kind", sa.String(10), nullable=False)') +
        COPY % ("address", ""),
        "addresses.kind is NOT NULL without a server default: the copy "
        "trigger inserts addresses rows with person_id and address only",
        added=[("addresses", None)])


def test_copy_target_too_short(people, engine_name):
    refused(people, engine_name, _addresses(
        'sa.Column("person_id", sa.Integer, unique=True), '
        'sa.Column("address", sa.String(40))') + COPY % ("address", ""),
        "addresses.address VARCHAR(40) cannot hold every value of "
        "people.address VARCHAR(100): up to 100 characters, at most 40 fit",
        added=[("addresses", None)])


def test_copy_missing_target(people, engine_name):
    refused(people, engine_name, COPY % ("address", ""),
            "copy people.address -> addresses.address refused: table "
            "addresses does not exist")
