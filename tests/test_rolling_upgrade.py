"""Rolling upgrades: old and new code write side by side after expand.

One suite for every engine.  "Old code" writes only the columns of the
release it was built for, "new code" only those of the next release.  After
expand, every row must read complete either way; updates on either side
carry over; writes that disagree with themselves are rejected; after migrate
and contract every row holds what the new code expects.
"""

import json

import pytest
import sqlalchemy as sa

from manage import database
from tests import helpers


class App:
    """One generation of application code talking to the database."""

    def __init__(self, url):
        self.engine = database.create_engine(url)

    def write(self, sql, **params):
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def rows(self, sql, **params):
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]

    def one(self, sql, **params):
        rows = self.rows(sql, **params)
        assert len(rows) == 1, rows
        return rows[0]

    def rejected(self, sql, **params):
        with pytest.raises(sa.exc.DBAPIError) as info:
            self.write(sql, **params)
        assert "conflicting values written to" in str(info.value)

    def close(self):
        self.engine.dispose()


@pytest.fixture
def app(db_url):
    a = App(db_url)
    yield a
    a.close()


def test_release_1_to_2_rename_and_derived_column(db_url, app):
    helpers.deploy(db_url, 1).sync()
    # Old code (release 1) before the upgrade starts.
    app.write("INSERT INTO users (id, name, email) VALUES "
              "(1, 'ann', 'Ann@Example.COM')")

    new = helpers.deploy(db_url, 2)
    new.expand()
    assert new.check().status.value == "migrate"

    # Old code keeps writing the old column only.
    app.write("INSERT INTO users (id, name, email) VALUES "
              "(2, 'bob', 'bob@B.org')")
    # New code writes the new columns only (and the email it always had).
    app.write("INSERT INTO users (id, display_name, email, email_domain) "
              "VALUES (3, 'cy', 'cy@c.net', 'c.net')")
    # Both read complete rows, each through its own columns.
    assert app.one("SELECT name, display_name, email_domain FROM users "
                   "WHERE id = 2") == ("bob", "bob", "b.org")
    assert app.one("SELECT name, display_name, email_domain FROM users "
                   "WHERE id = 3") == ("cy", "cy", "c.net")

    # Updates carry over both ways.
    app.write("UPDATE users SET name = 'cyrus' WHERE id = 3")
    app.write("UPDATE users SET display_name = 'bobby' WHERE id = 2")
    app.write("UPDATE users SET email = 'bob@new.example' WHERE id = 2")
    assert app.one("SELECT name, display_name FROM users WHERE id = 3") == \
        ("cyrus", "cyrus")
    assert app.one("SELECT name, display_name, email_domain FROM users "
                   "WHERE id = 2") == ("bobby", "bobby", "new.example")
    # Writing both sides consistently is accepted.
    app.write("UPDATE users SET name = 'b', display_name = 'b' WHERE id = 2")

    # Conflicting writes are rejected and change nothing.
    app.rejected("INSERT INTO users (id, name, display_name, email) VALUES "
                 "(4, 'x', 'y', 'x@y.z')")
    app.rejected("UPDATE users SET name = 'p', display_name = 'q' "
                 "WHERE id = 3")
    app.rejected("INSERT INTO users (id, display_name, email, email_domain) "
                 "VALUES (5, 'e', 'e@right.org', 'wrong.org')")
    assert app.rows("SELECT id FROM users ORDER BY id") == [(1,), (2,), (3,)]
    assert app.one("SELECT name, display_name FROM users WHERE id = 3") == \
        ("cyrus", "cyrus")

    # The row written before expand is moved by the data migrations.
    assert app.one("SELECT display_name, email_domain FROM users "
                   "WHERE id = 1") == (None, None)
    result = new.migrate()
    moved = {o.name: o.rows_moved for o in result.outcomes}
    assert moved == {"users_display_name": 1, "users_email_domain": 1}
    new.contract()
    assert new.check().status.value == "current"
    assert app.rows("SELECT id, display_name, email, email_domain FROM "
                    "users ORDER BY id") == [
        (1, "ann", "Ann@Example.COM", "example.com"),
        (2, "b", "bob@new.example", "new.example"),
        (3, "cyrus", "cy@c.net", "c.net")]
    columns = [c[0] for c in helpers.schema_snapshot(db_url)["users"]
               ["columns"]]
    assert "name" not in columns


def _settings(text):
    return json.loads(text) if text is not None else None


def test_release_2_to_3_lossy_flag_json_and_moved_column(db_url, app):
    helpers.deploy(db_url, 2).sync()
    # Old code (release 2) data before the upgrade.
    app.write("INSERT INTO users (id, display_name, email, email_domain, "
              "settings, address) VALUES (1, 'ann', 'a@x.org', 'x.org', "
              ":s, '1 Main St')",
              s='{"theme": "dark", "language": "en", "tz": "UTC"}')
    app.write("INSERT INTO projects (id, owner_id, title, is_public) VALUES "
              "(1, 1, 'open', :t), (2, 1, 'closed', :f)", t=True, f=False)

    new = helpers.deploy(db_url, 3)
    new.expand()

    # -- the flag that becomes a multi-valued state (lossy one way) --------
    app.write("INSERT INTO projects (id, owner_id, title, is_public) "
              "VALUES (3, 1, 'old-public', :t)", t=True)
    app.write("INSERT INTO projects (id, owner_id, title, visibility) "
              "VALUES (4, 1, 'new-shared', 'shared')")
    app.write("INSERT INTO projects (id, owner_id, title, visibility) "
              "VALUES (5, 1, 'new-public', 'public')")
    got = {r[0]: (bool(r[1]), r[2]) for r in app.rows(
        "SELECT id, is_public, visibility FROM projects WHERE id >= 3")}
    assert got == {3: (True, "public"), 4: (False, "shared"),
                   5: (True, "public")}
    # Old code flips the flag of a shared project: it becomes public.
    app.write("UPDATE projects SET is_public = :t WHERE id = 4", t=True)
    assert app.one("SELECT visibility FROM projects WHERE id = 4") == \
        ("public",)
    # New code makes a public project private: the flag follows.
    app.write("UPDATE projects SET visibility = 'private' WHERE id = 5")
    assert bool(app.one("SELECT is_public FROM projects WHERE id = 5")[0]) \
        is False
    # New code shares it: the flag stays false, nothing is lost.
    app.write("UPDATE projects SET visibility = 'shared' WHERE id = 5")
    assert app.one("SELECT visibility FROM projects WHERE id = 5") == \
        ("shared",)
    # Old code renames the project: the state is untouched.
    app.write("UPDATE projects SET title = 'renamed' WHERE id = 5")
    assert app.one("SELECT visibility FROM projects WHERE id = 5") == \
        ("shared",)
    app.rejected("INSERT INTO projects (id, owner_id, title, is_public, "
                 "visibility) VALUES (6, 1, 'bad', :t, 'private')", t=True)

    # -- JSON settings that become columns ---------------------------------
    app.write("INSERT INTO users (id, display_name, email, email_domain, "
              "settings) VALUES (2, 'bo', 'b@y.org', 'y.org', :s)",
              s='{"theme": "light", "language": "fr"}')
    app.write("INSERT INTO users (id, display_name, email, email_domain, "
              "theme, language) VALUES (3, 'cy', 'c@z.org', 'z.org', "
              "'blue', 'de')")
    assert app.one("SELECT theme, language FROM users WHERE id = 2") == \
        ("light", "fr")
    assert _settings(app.one("SELECT settings FROM users WHERE id = 3")[0]) \
        == {"theme": "blue", "language": "de"}
    # New code changes one column: the document follows, other keys stay.
    app.write("UPDATE users SET theme = 'sepia' WHERE id = 2")
    assert _settings(app.one("SELECT settings FROM users WHERE id = 2")[0]) \
        == {"theme": "sepia", "language": "fr"}
    # Old code rewrites the document: the columns follow.
    app.write("UPDATE users SET settings = :s WHERE id = 3",
              s='{"theme": "dark", "language": "it"}')
    assert app.one("SELECT theme, language FROM users WHERE id = 3") == \
        ("dark", "it")
    app.rejected("INSERT INTO users (id, display_name, email, email_domain, "
                 "settings, theme) VALUES (9, 'x', 'x@q.org', 'q.org', :s, "
                 "'light')", s='{"theme": "dark"}')

    # -- the address that moves to its own table ---------------------------
    # Old code writes users.address only: the triggers copy each write.
    app.write("UPDATE users SET address = '2 Old Ln' WHERE id = 2")
    app.write("INSERT INTO users (id, display_name, email, email_domain, "
              "address) VALUES (4, 'di', 'd@w.org', 'w.org', '4 Bay Rd')")
    app.write("UPDATE users SET address = '4 Cove Rd' WHERE id = 4")
    assert app.rows("SELECT user_id, address FROM user_addresses "
                    "ORDER BY user_id") == [(2, "2 Old Ln"), (4, "4 Cove Rd")]
    app.write("UPDATE users SET address = NULL WHERE id = 2")
    app.write("DELETE FROM users WHERE id = 4")  # the new table cascades
    assert app.rows("SELECT user_id FROM user_addresses") == []
    # New code writes both places.
    app.write("INSERT INTO user_addresses (user_id, address) "
              "VALUES (3, '3 New Rd')")
    app.write("UPDATE users SET address = '3 New Rd' WHERE id = 3")

    # Rows from before expand are moved by migrate, row by row.
    assert app.one("SELECT visibility FROM projects WHERE id = 1") == (None,)
    result = new.migrate()
    moved = {o.name: o.rows_moved for o in result.outcomes}
    assert moved == {"users_display_name": 0, "users_email_domain": 0,
                     "projects_visibility": 2, "users_settings_columns": 1,
                     "users_address_table": 1}
    new.contract()
    assert new.check().status.value == "current"

    assert app.rows("SELECT id, visibility FROM projects ORDER BY id") == [
        (1, "public"), (2, "private"), (3, "public"), (4, "public"),
        (5, "shared")]
    assert app.rows("SELECT id, theme, language FROM users ORDER BY id") == [
        (1, "dark", "en"), (2, "sepia", "fr"), (3, "dark", "it")]
    assert app.rows("SELECT user_id, address FROM user_addresses "
                    "ORDER BY user_id") == [(1, "1 Main St"), (3, "3 New Rd")]
    snap = helpers.schema_snapshot(db_url)
    assert "is_public" not in [c[0] for c in snap["projects"]["columns"]]
    assert not {"settings", "address"} & {c[0] for c in
                                          snap["users"]["columns"]}
    assert snap["<triggers>"] == []
