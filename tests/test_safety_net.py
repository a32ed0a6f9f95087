"""The safety net (issue 8): syncs installed as declared, every row verified.

* The registry: an online expand records each sync and copy it installs in
  manage_version (kind ``sync``); the contract step that drops it removes
  the record; an offline sync records nothing.
* Input 3: a later revision of the same release rebuilds the synced table
  (``op.batch_alter_table`` on SQLite drops its triggers): expand re-creates
  them at once, and writes of old and new code stay synced.
* A trigger dropped by hand after expand: migrate and contract refuse, in
  one line naming the sync, the table and the repair, and change nothing;
  ``manage db expand`` repairs it.
* Before contract every row is verified, byte for byte: a row made
  inconsistent by hand refuses the contract with the count and the key;
  fixed, contract passes.  ``version`` and ``check`` show the same figures.
"""

import json
import os

import pytest

from data_migrations import (projects_visibility, users_address,
                             users_display_name, users_email_domain,
                             users_settings)
from manage import column_sync, database, dialects, sync_registry, verify
from manage import version_table as vt
from manage.datamigration import SyncBackfill
from manage.repository import Repository
from tests import helpers

GROUP = column_sync.as_group([users_display_name.SYNC,
                              users_email_domain.SYNC]).name
RENAME = users_display_name.SYNC.name

#: Input 3's revision B: a UNIQUE column added to users in a batch, which
#: SQLite runs by rebuilding the table (and so drops its triggers).
REVISION_B = '''"""Release 2: users.handle, unique (SQLite rebuilds users).

Revision ID: r2_expand02
"""
import sqlalchemy as sa
from alembic import op

revision = "r2_expand02"
down_revision = "r2_expand01"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("handle", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_users_handle", ["handle"])
'''


def support_of(url):
    return dialects.get(database.parse_url(url).get_backend_name())


def release2(tmp_path, url, rebuild=True):
    """A config for release 2's code (with revision B when ``rebuild``)."""
    repo = helpers.release_repository(tmp_path, 2)
    if rebuild:
        with open(os.path.join(repo.path, "expand",
                               "r2_expand02_handle.py"), "w") as f:
            f.write(REVISION_B)
    return helpers.write_config(
        tmp_path, url, repository=repo.path,
        data_migrations="users_display_name, users_email_domain")


def release1_with_users(url):
    helpers.deploy(url, 1).sync()
    helpers.query(url, "INSERT INTO users (id, name, email) VALUES "
                       "(1, 'alice', 'alice@example.org'), "
                       "(2, 'bob', 'bob@example.org')")


def state(url):
    """Schema, rows and manage's records: what a refusal must not change."""
    engine = database.create_engine(url)
    try:
        with engine.connect() as conn:
            records = {key: {k: v for k, v in row.items()
                             if k not in ("updated_at", "started_at")}
                       for key, row in vt.read(conn).items()
                       if key[0] != vt.LOCK}
    finally:
        engine.dispose()
    return (helpers.schema_snapshot(url),
            helpers.query(url, "SELECT * FROM users ORDER BY id"), records)


def registry(url):
    engine = database.create_engine(url)
    try:
        with engine.connect() as conn:
            return {e.name: e for e in sync_registry.read(conn)}
    finally:
        engine.dispose()


def installed_problems(url):
    engine = database.create_engine(url)
    try:
        with engine.connect() as conn:
            return verify.installed_problems(
                conn, support_of(url), sync_registry.read(conn))
    finally:
        engine.dispose()


# -- the registry ------------------------------------------------------------
def test_expand_records_each_sync_and_contract_removes_it(db_url, tmp_path):
    release1_with_users(db_url)
    conf = helpers.write_config(tmp_path, db_url)
    assert helpers.run(["db", "expand"], conf).code == 0
    entries = registry(db_url)
    copy = users_address.COPY
    assert sorted(entries) == sorted([
        GROUP, projects_visibility.SYNC.name, users_settings.SYNC.name,
        copy.name])
    group = entries[GROUP]
    assert (group.kind, group.revision, group.tables) == (
        "sync", "r2_expand01", ("users",))
    # The declarations come back equal to those the revision gave.
    assert group.declarations == (users_display_name.SYNC,
                                  users_email_domain.SYNC)
    support = support_of(db_url)
    present = set(helpers.schema_snapshot(db_url)["<triggers>"])
    assert {name for name, _ in group.triggers} == \
        set(support.trigger_names(GROUP)) & present
    assert all(table == "users" for _, (table, _) in group.triggers)
    assert len(group.create) >= 1 and len(group.drop) >= 1
    moved = entries[copy.name]
    assert (moved.kind, moved.revision, moved.tables) == (
        "copy", "r3_expand02", ("users", "user_addresses"))
    assert moved.declarations == (copy,)
    assert {t for _, (t, _) in moved.triggers} == {"users", "user_addresses"}
    assert installed_problems(db_url) == {}

    assert helpers.run(["db", "migrate"], conf).code == 0
    assert helpers.run(["db", "contract"], conf).code == 0
    assert registry(db_url) == {}


def test_offline_sync_records_nothing(sqlite_url, tmp_path):
    conf = helpers.write_config(tmp_path, sqlite_url)
    assert helpers.run(["db", "sync"], conf).code == 0
    assert helpers.query(sqlite_url, "SELECT count(*) FROM manage_version "
                                     "WHERE kind = 'sync'") == [(0,)]


# -- input 3: a later revision rebuilds the synced table ----------------------
def test_rebuilt_table_keeps_its_sync(db_url, engine_name, tmp_path):
    release1_with_users(db_url)
    conf = release2(tmp_path, db_url)
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 0, r.err
    assert "applied 2 revision(s) (r2_expand01, r2_expand02)" in r.out
    rebuilt = "expand: re-created the triggers of %s" % GROUP in r.out
    # SQLite rebuilt users and lost the triggers; the others altered it.
    assert rebuilt == (engine_name == "sqlite"), r.out
    entry = registry(db_url)[GROUP]
    assert entry.repaired_after == ("r2_expand02" if rebuilt else None)
    assert installed_problems(db_url) == {}
    assert helpers.query(db_url, "SELECT handle FROM users ORDER BY id") \
        == [(None,), (None,)]

    # Old code writes the old column; new code the new one.
    helpers.query(db_url, "INSERT INTO users (id, name, email) VALUES "
                          "(3, 'carol', 'carol@example.org')")
    helpers.query(db_url, "UPDATE users SET name = 'Alice' WHERE id = 1")
    helpers.query(db_url, "INSERT INTO users (id, display_name, email, "
                          "handle) VALUES (4, 'dave', 'dave@example.org', "
                          "'dave')")
    helpers.query(db_url, "UPDATE users SET display_name = 'Bobby' "
                          "WHERE id = 2")
    assert helpers.query(db_url, "SELECT id, name, display_name FROM users "
                                 "ORDER BY id") == [
        (1, "Alice", "Alice"), (2, "Bobby", "Bobby"), (3, "carol", "carol"),
        (4, "dave", "dave")]
    assert helpers.query(db_url, "SELECT id, email_domain FROM users WHERE "
                                 "id IN (3, 4) ORDER BY id") == [
        (3, "example.org"), (4, "example.org")]

    assert helpers.run(["db", "migrate"], conf).code == 0
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 0, r.err
    assert helpers.query(db_url, "SELECT id, display_name, email_domain, "
                                 "handle FROM users ORDER BY id") == [
        (1, "Alice", "example.org", None), (2, "Bobby", "example.org", None),
        (3, "carol", "example.org", None), (4, "dave", "example.org", "dave")]


# -- a trigger missing: migrate and contract refuse ---------------------------
def test_missing_trigger_refuses_migrate_and_contract(db_url, tmp_path):
    release1_with_users(db_url)
    conf = release2(tmp_path, db_url, rebuild=False)
    assert helpers.run(["db", "expand"], conf).code == 0
    assert helpers.run(["db", "migrate"], conf).code == 0
    support = support_of(db_url)
    helpers.query(db_url, support.drop_sync_sql("users", GROUP)[0])
    missing = support.trigger_names(GROUP)[0]
    before = state(db_url)
    for action in ("migrate", "contract"):
        r = helpers.run(["db", action], conf)
        assert r.code == 1
        assert r.err == (
            "manage: error: %s refused: sync %s on table users: trigger(s) "
            "%s missing; writes are not synced while they are not "
            "installed: run `manage db expand`, which re-creates them from "
            "what expand recorded, then `manage db %s` again; nothing was "
            "changed\n" % (action, GROUP, missing, action))
        assert state(db_url) == before
    r = helpers.run(["db", "check"], conf)
    assert r.code == 5
    assert r.out.splitlines()[0] == (
        "migrate and contract would refuse: sync %s on table users is not "
        "installed as expand made it (trigger(s) %s missing); run `manage db "
        "expand` to re-create it" % (GROUP, missing))
    data = json.loads(helpers.run(["db", "version", "--format", "json"],
                                  conf).out)
    rename = [s for s in data["syncs"] if s["name"] == RENAME][0]
    assert (rename["installed"], rename["problem"]) == (
        False, "trigger(s) %s missing" % missing)

    r = helpers.run(["db", "expand"], conf)
    assert r.code == 0, r.err
    assert "expand: re-created the triggers of %s" % GROUP in r.out
    assert installed_problems(db_url) == {}
    helpers.query(db_url, "INSERT INTO users (id, name, email) VALUES "
                          "(3, 'carol', 'carol@example.org')")
    assert helpers.query(db_url, "SELECT display_name FROM users WHERE "
                                 "id = 3") == [("carol",)]
    assert helpers.run(["db", "migrate"], conf).code == 0
    assert helpers.run(["db", "contract"], conf).code == 0
    assert helpers.query(db_url, "SELECT id, display_name FROM users ORDER "
                                 "BY id") == [(1, "alice"), (2, "bob"),
                                              (3, "carol")]


# -- every row verified before contract ---------------------------------------
def _without_triggers(url, sql):
    """Run ``sql`` as a write the triggers do not see, then re-create
    them (``manage db expand``)."""
    support = support_of(url)
    for statement in support.drop_sync_sql("users", GROUP):
        helpers.query(url, statement)
    helpers.query(url, sql)


def test_contract_refuses_rows_that_disagree(db_url, tmp_path):
    release1_with_users(db_url)
    conf = release2(tmp_path, db_url, rebuild=False)
    assert helpers.run(["db", "expand"], conf).code == 0
    assert helpers.run(["db", "migrate"], conf).code == 0
    # Old code's writes the triggers did not see: a case-only change
    # (equal in MariaDB's default collation, not byte for byte) and a new
    # value.
    _without_triggers(db_url, "UPDATE users SET name = CASE id WHEN 1 THEN "
                              "'ALICE' ELSE 'Robert' END")
    r = helpers.run(["db", "expand"], conf)
    assert "re-created the triggers of %s" % GROUP in r.out
    before = state(db_url)
    figures = ("sync %s (users.name -> display_name): 2 row(s) disagree, "
               "keys 1, 2" % RENAME)
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 1
    assert r.err == (
        "manage: error: contract refused: rows whose old and new sides "
        "disagree, which the contract would lose: %s. Make each row's two "
        "sides agree (write the intended value again: the triggers carry it "
        "across), then run `manage db contract` again; nothing was changed\n"
        % figures)
    assert state(db_url) == before

    # version and check show the same figures.
    r = helpers.run(["db", "check"], conf)
    assert r.code == 5
    line = ("sync %s (users.name -> display_name): installed, 2 row(s) "
            "disagree (keys 1, 2)" % RENAME)
    assert r.out == ("contract would refuse: %s; make each row's two sides "
                     "agree, then run `manage db contract`\n  %s\n"
                     % (line, line))
    r = helpers.run(["db", "version"], conf)
    assert "column syncs:\n" in r.out and "  %s\n" % line in r.out
    assert ("  sync %s (users.email -> email_domain): installed, 0 row(s) "
            "disagree\n" % users_email_domain.SYNC.name) in r.out
    data = json.loads(helpers.run(["db", "version", "--format", "json"],
                                  conf).out)
    rename = [s for s in data["syncs"] if s["name"] == RENAME][0]
    assert rename == {
        "name": RENAME, "kind": "sync", "table": "users",
        "columns": "users.name -> display_name", "revision": "r2_expand01",
        "installed": True, "problem": None, "rows_disagreeing": 2,
        "sample_keys": [1, 2], "error": None, "group": GROUP}

    # New code writes the intended values: the triggers carry them across.
    helpers.query(db_url, "UPDATE users SET display_name = 'ALICE' WHERE "
                          "id = 1")
    helpers.query(db_url, "UPDATE users SET display_name = 'Robert' WHERE "
                          "id = 2")
    r = helpers.run(["db", "check"], conf)
    assert (r.code, r.out) == (5, "contract needed: once every node runs "
                                  "the new code, run `manage db contract`\n")
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 0, r.err
    assert helpers.query(db_url, "SELECT id, display_name FROM users ORDER "
                                 "BY id") == [(1, "ALICE"), (2, "Robert")]


def test_contract_refuses_a_copy_that_disagrees(db_url, tmp_path):
    helpers.deploy(db_url, 2).sync()
    helpers.query(db_url, "INSERT INTO users (id, display_name, email, "
                          "address) VALUES (1, 'alice', 'alice@example.org', "
                          "'1 Main St'), (2, 'bob', 'bob@example.org', "
                          "'2 Oak Ave')")
    conf = helpers.write_config(tmp_path, db_url)
    assert helpers.run(["db", "expand"], conf).code == 0
    assert helpers.run(["db", "migrate"], conf).code == 0
    copy = users_address.COPY
    support = support_of(db_url)
    for statement in support.drop_copy_sql(copy):
        helpers.query(db_url, statement)
    # Old code clears an address the triggers do not carry: the target row
    # stays, which no data migration counts (they move values, not their
    # absence).
    helpers.query(db_url, "UPDATE users SET address = NULL WHERE id = 2")
    assert helpers.run(["db", "expand"], conf).code == 0
    before = state(db_url)
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 1
    assert ("copy %s (users.address -> user_addresses.address): 1 row(s) "
            "disagree, keys 2. " % copy.name) in r.err, r.err
    assert state(db_url) == before
    r = helpers.run(["db", "check"], conf)
    assert r.code == 5 and r.out.startswith("contract would refuse: copy "
                                            "%s" % copy.name), r.out
    # New code removes the address: the triggers carry it back.
    helpers.query(db_url, "DELETE FROM user_addresses WHERE user_id = 2")
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 0, r.err
    assert helpers.query(db_url, "SELECT user_id, address FROM "
                                 "user_addresses ORDER BY user_id") == [
        (1, "1 Main St")]


class WrongDisplayName(SyncBackfill):
    """A backfill that writes the wrong value (its rows then disagree)."""
    name = "users_display_name"
    after_revision = "r2_expand01"
    sync = users_display_name.SYNC
    values = {"display_name": "upper({name})"}


def test_offline_sync_verifies_the_declared_rows(db_url, tmp_path):
    """No triggers, no records: the declarations the data migrations carry
    are verified before contract."""
    release1_with_users(db_url)
    repo = helpers.release_repository(tmp_path, 2)
    m = helpers.manager(db_url, repository=Repository(repo.path), plugins=[
        WrongDisplayName(), users_email_domain.BackfillEmailDomain()])
    with pytest.raises(verify.RowsDisagreeError) as caught:
        m.sync()
    assert "sync %s (users.name -> display_name): 2 row(s) disagree, keys " \
           "1, 2" % RENAME in str(caught.value)
    assert caught.value.exit_code == 1
    # Contract did not run: the old column is there, with its values.
    assert helpers.query(db_url, "SELECT id, name, display_name FROM users "
                                 "ORDER BY id") == [
        (1, "alice", "ALICE"), (2, "bob", "BOB")]
    m.close()


def test_a_changed_trigger_is_refused_then_repaired(db_url, engine_name,
                                                    tmp_path):
    """A trigger of the same name that is not the one expand made (or, on
    PostgreSQL, one disabled) is not installed as declared."""
    release1_with_users(db_url)
    conf = release2(tmp_path, db_url, rebuild=False)
    assert helpers.run(["db", "expand"], conf).code == 0
    support = support_of(db_url)
    name = support.trigger_names(GROUP)[0]
    drop = support.drop_sync_sql("users", GROUP)[0]
    statements = {
        "postgresql": ['ALTER TABLE users DISABLE TRIGGER "%s"' % name],
        "mysql": [drop, "CREATE TRIGGER `%s` BEFORE INSERT ON users FOR "
                        "EACH ROW SET @manage_test = 1" % name],
        "sqlite": [drop, 'CREATE TRIGGER "%s" AFTER INSERT ON users '
                         'BEGIN SELECT 1; END' % name]}[engine_name]
    for statement in statements:
        helpers.query(db_url, statement)
    problem = "trigger(s) %s changed since expand made them" % name
    assert installed_problems(db_url) == {GROUP: problem}
    r = helpers.run(["db", "migrate"], conf)
    assert r.code == 1 and problem in r.err, r.err
    r = helpers.run(["db", "expand"], conf)
    assert "re-created the triggers of %s" % GROUP in r.out
    assert installed_problems(db_url) == {}
    helpers.query(db_url, "INSERT INTO users (id, name, email) VALUES "
                          "(3, 'carol', 'carol@example.org')")
    assert helpers.query(db_url, "SELECT display_name, email_domain FROM "
                                 "users WHERE id = 3") == [
        ("carol", "example.org")]


@pytest.mark.parametrize("key", ["composite", "text", "none"])
def test_counts_and_sample_keys_for_any_primary_key(db_url, key):
    """The figures name rows by the table's primary key, whatever it is:
    a tuple for a composite key, none without a key (the count stays)."""
    user_id, primary = {"composite": ("INTEGER", ", PRIMARY KEY (org_id, "
                                                 "user_id)"),
                        "text": ("VARCHAR(20)", ", PRIMARY KEY (user_id)"),
                        "none": ("INTEGER", "")}[key]
    helpers.query(db_url, "CREATE TABLE members (org_id INTEGER NOT NULL, "
                          "user_id %s NOT NULL, name VARCHAR(40), "
                          "display_name VARCHAR(40)%s)" % (user_id, primary))
    helpers.query(db_url, "INSERT INTO members VALUES (1, '1', 'Ann', "
                          "'Ann'), (1, '2', 'bob', 'Bob'), (2, '3', 'José', "
                          "'Jose'), (2, '4', NULL, NULL), (3, '5', 'x', "
                          "NULL)")
    sync = column_sync.declare("members", "name", "display_name")
    engine = database.create_engine(db_url)
    try:
        with engine.connect() as conn:
            count = verify.count_disagreeing(conn, support_of(db_url),
                                             verify.Target(sync))
    finally:
        engine.dispose()
    assert count.error is None
    assert count.rows == 3
    assert count.sample_keys == {
        "composite": [(1, 2), (2, 3), (3, 5)],
        "text": ["2", "3", "5"], "none": []}[key]
