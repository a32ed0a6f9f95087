"""The full expand / migrate / contract lifecycle through the CLI."""

import json
import os

import pytest

from tests import helpers


@pytest.fixture
def conf(db_url, tmp_path):
    return helpers.write_config(tmp_path, db_url)


def check(conf):
    return helpers.run(["db", "check"], conf)


def test_lifecycle_with_check_codes(conf):
    r = check(conf)
    assert (r.code, r.out.strip()) == (3, "expand needed: run `manage db "
                                           "expand`")
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 0, r.err
    assert "applied 4 revision(s)" in r.out
    assert "expand is at r3_expand02" in r.out
    r = check(conf)
    assert r.code == 4 and "manage db migrate" in r.out
    r = helpers.run(["db", "migrate"], conf)
    assert r.code == 0, r.err
    r = check(conf)
    assert r.code == 5 and "manage db contract" in r.out
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 0, r.err
    assert "contract is at r3_contract02" in r.out
    r = check(conf)
    assert (r.code, r.out.strip()) == (0, "database is current: nothing to "
                                          "do")


def test_repeated_commands_are_no_ops(conf, db_url):
    assert helpers.run(["db", "sync"], conf).code == 0
    before = helpers.schema_snapshot(db_url)
    for action in ("expand", "migrate", "contract", "sync"):
        r = helpers.run(["db", action], conf)
        assert r.code == 0, (action, r.err)
        assert "applied" not in r.out
    assert helpers.schema_snapshot(db_url) == before
    assert check(conf).code == 0


def test_migrate_refused_before_expand(conf, db_url):
    r = helpers.run(["db", "migrate"], conf)
    assert r.code == 1
    assert r.err.startswith("manage: error: ")
    assert "run `manage db expand` first" in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert "users" not in helpers.schema_snapshot(db_url)


def test_contract_refused_before_expand(conf, db_url):
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 1
    assert "run `manage db expand` first" in r.err
    assert "users" not in helpers.schema_snapshot(db_url)


def test_contract_refused_before_migrate(conf, db_url):
    assert helpers.run(["db", "expand"], conf).code == 0
    before = helpers.schema_snapshot(db_url)
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 1
    assert "run `manage db migrate` first" in r.err
    assert helpers.schema_snapshot(db_url) == before
    assert check(conf).code == 4


def test_contract_recounts_rows_written_after_migrate(conf, db_url):
    """A migration marked done is counted again before contract."""
    assert helpers.run(["db", "expand"], conf).code == 0
    assert helpers.run(["db", "migrate"], conf).code == 0
    # A write the triggers did not see (they are dropped by hand here):
    # only users.address has the new address.
    from data_migrations.users_address import COPY
    from manage import dialects
    support = dialects.get(helpers.database.parse_url(db_url)
                           .get_backend_name())
    for statement in support.drop_sync_sql(COPY.table, COPY.name):
        helpers.query(db_url, statement)
    helpers.query(db_url, "INSERT INTO users (id, name, email, address) "
                          "VALUES (7, 'x', 'x@y.z', '9 Elm St')")
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 1
    assert "users_address_table: 1" in r.err
    assert "run `manage db migrate` first" in r.err
    assert check(conf).code == 4
    # The copy's triggers are missing: migrate refuses until expand
    # re-creates them (manage.verify).
    r = helpers.run(["db", "migrate"], conf)
    assert r.code == 1 and "run `manage db expand`" in r.err, r.err
    assert helpers.run(["db", "expand"], conf).code == 0
    assert helpers.run(["db", "migrate"], conf).code == 0
    assert helpers.run(["db", "contract"], conf).code == 0
    assert helpers.query(db_url, "SELECT user_id, address FROM "
                                 "user_addresses") == [(7, "9 Elm St")]


def test_sync_and_online_steps_leave_identical_schemas(engine_name,
                                                      tmp_path):
    from tests.conftest import new_database
    online, owner1 = new_database(engine_name, tmp_path / "a")
    offline, owner2 = new_database(engine_name, tmp_path / "b")
    try:
        (tmp_path / "a").mkdir(exist_ok=True)
        (tmp_path / "b").mkdir(exist_ok=True)
        conf_a = helpers.write_config(tmp_path / "a", online)
        conf_b = helpers.write_config(tmp_path / "b", offline)
        for action in ("expand", "migrate", "contract"):
            assert helpers.run(["db", action], conf_a).code == 0
        assert helpers.run(["db", "sync"], conf_b).code == 0
        snap = helpers.schema_snapshot(online)
        assert snap == helpers.schema_snapshot(offline)
        assert snap["<triggers>"] == []
        assert "name" not in [c[0] for c in snap["users"]["columns"]]
    finally:
        for owner in (owner1, owner2):
            if owner:
                owner[0].drop_database(owner[1])


def test_sync_creates_no_triggers_at_any_point(sqlite_url):
    m = helpers.manager(sqlite_url)
    m.sync()
    assert helpers.schema_snapshot(sqlite_url)["<triggers>"] == []


def test_expand_creates_sync_triggers_and_contract_drops_them(conf, db_url):
    assert helpers.run(["db", "expand"], conf).code == 0
    triggers = helpers.schema_snapshot(db_url)["<triggers>"]
    assert triggers, "expand created no sync triggers"
    assert all(t.startswith("msync_") for t in triggers)
    helpers.run(["db", "migrate"], conf)
    helpers.run(["db", "contract"], conf)
    assert helpers.schema_snapshot(db_url)["<triggers>"] == []


def test_version_json_and_read_only(conf, db_url):
    assert helpers.run(["db", "expand"], conf).code == 0
    before = helpers.query(db_url, "SELECT * FROM manage_version ORDER BY "
                                   "kind, name")
    r = helpers.run(["db", "version", "--format", "json"], conf)
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["status"] == "migrate"
    assert data["branches"]["expand"] == {
        "current": "r3_expand02", "head": "r3_expand02", "pending": []}
    assert data["branches"]["contract"]["current"] is None
    assert data["branches"]["contract"]["pending"] == [
        "r1_contract01", "r2_contract01", "r3_contract01", "r3_contract02"]
    names = [d["name"] for d in data["data_migrations"]]
    assert names[:2] == ["users_display_name", "users_email_domain"]
    assert {d["state"] for d in data["data_migrations"]} == {"pending"}
    assert helpers.query(db_url, "SELECT * FROM manage_version ORDER BY "
                                 "kind, name") == before
    text = helpers.run(["db", "version"], conf)
    assert "expand:   r3_expand02 (head r3_expand02)" in text.out
    assert "contract: <base> (head r3_contract02), 4 pending" in text.out


def test_version_on_missing_sqlite_file_creates_nothing(tmp_path):
    path = tmp_path / "none.sqlite"
    conf = helpers.write_config(tmp_path, "sqlite:///%s" % path)
    assert helpers.run(["db", "version"], conf).code == 0
    assert check(conf).code == 3
    assert not path.exists()


def test_unknown_revision_refused_by_every_command(conf, db_url):
    assert helpers.run(["db", "sync"], conf).code == 0
    helpers.query(db_url, "UPDATE alembic_version SET version_num = "
                          "'r9_contract07'")
    for action in ("version", "check", "expand", "migrate", "contract",
                   "sync"):
        r = helpers.run(["db", action], conf)
        assert r.code == 1, action
        assert "r9_contract07" in r.err and "does not know" in r.err
        assert "Traceback" not in r.err
    assert helpers.query(db_url, "SELECT version_num FROM "
                                 "alembic_version") == [("r9_contract07",)]


def test_foreign_database_refused(conf, db_url):
    helpers.query(db_url, "CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    for action in ("check", "expand", "sync"):
        r = helpers.run(["db", action], conf)
        assert r.code == 1
        assert "no version recorded by manage" in r.err
        assert "invoices" in r.err
    snap = helpers.schema_snapshot(db_url)
    assert sorted(t for t in snap if not t.startswith("<")) == ["invoices"]


def test_make_sync_default_needs_no_config(tmp_path):
    """`manage db sync` with no config: an SQLite file in the cwd."""
    env = dict(os.environ, HOME=str(tmp_path))
    r = helpers.run_process(["db", "sync"], cwd=tmp_path, env=env)
    assert r.code == 0, r.err
    assert (tmp_path / "manage.sqlite").exists()
    assert "status: database is current" in r.out
    r = helpers.run_process(["db", "check"], cwd=tmp_path, env=env)
    assert r.code == 0


def test_usage_errors_exit_2(tmp_path):
    for argv in (["db"], ["db", "frobnicate"], ["nope"],
                 ["db", "migrate", "--max-count", "zero"]):
        r = helpers.run(argv)
        assert r.code == 2, argv


def test_plain_alembic_reads_the_repository():
    import subprocess
    import sys
    alembic = os.path.join(os.path.dirname(sys.executable), "alembic")
    out = subprocess.run(
        [alembic, "-c", os.path.join(helpers.ROOT, "migrations",
                                     "alembic.ini"), "heads"],
        capture_output=True, text=True, check=True).stdout
    assert "r3_expand02 (expand)" in out
    assert "r3_contract02 (contract) (head)" in out
