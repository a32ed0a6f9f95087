"""The journal of steps, what version/check show of it, and safe resumes."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests import helpers


def steps(url):
    """Journal rows: name -> (state, rows_done, detail as dict)."""
    return {name: (state, rows, json.loads(detail or "{}"))
            for name, state, rows, detail in helpers.query(
                url, "SELECT name, state, rows_done, detail FROM "
                     "manage_version WHERE kind = 'step'")}


@pytest.fixture
def repo(tmp_path):
    return helpers.release_repository(tmp_path, 3)


def test_each_revision_is_journaled_done_with_its_run(db_url, tmp_path):
    conf = helpers.write_config(tmp_path, db_url)
    assert helpers.run(["db", "expand"], conf).code == 0
    journal = steps(db_url)
    for rev in ("r1_expand01", "r2_expand01", "r3_expand01", "r3_expand02"):
        state, _, info = journal["expand:" + rev]
        assert state == "done"
        assert info == {"command": "expand", "host": socket.gethostname(),
                        "pid": os.getpid()}
    assert not [n for n in journal if n.startswith("contract:")]
    assert helpers.run(["db", "sync"], conf).code == 0
    journal = steps(db_url)
    assert journal["contract:r3_contract02"][0] == "done"
    assert journal["contract:r3_contract02"][2]["command"] == "sync"


def test_failed_revision_is_shown_and_resumed(db_url, tmp_path, repo):
    """A revision fails half-way (after its first statement, which MySQL
    cannot roll back); version and check say so; fixed, it resumes."""
    helpers.deploy(db_url, 2).sync()
    edit = helpers.edit_revision
    edit(repo.path, "r3_expand02", "    sync_columns(users_settings.SYNC)\n",
         "    from alembic import op\n"
         "    op.execute('UPDATE no_such_table SET x = 1')\n"
         "    sync_columns(users_settings.SYNC)\n")
    conf = helpers.write_config(tmp_path, db_url, repository=repo.path)
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 1
    assert "no_such_table" in r.err
    state, _, info = steps(db_url)["expand:r3_expand02"]
    assert state == "failed" and "no_such_table" in info["error"]
    assert steps(db_url)["expand:r3_expand01"][0] == "done"

    r = helpers.run(["db", "check"], conf)
    assert r.code == 3
    assert r.out.startswith("expand revision r3_expand02 failed: ")
    assert "fix the cause, then run `manage db expand` again" in r.out
    r = helpers.run(["db", "version"], conf)
    assert "unfinished: expand revision r3_expand02 failed" in r.out
    assert "expand:   r3_expand01 (head r3_expand02), 1 pending" in r.out
    data = json.loads(helpers.run(["db", "version", "--format", "json"],
                                  conf).out)
    assert [(s["name"], s["condition"]) for s in data["steps"]] == [
        ("r3_expand02", "failed")]

    edit(repo.path, "r3_expand02",
         "    op.execute('UPDATE no_such_table SET x = 1')\n", "")
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 0, r.err
    assert "applied 1 revision(s) (r3_expand02)" in r.out
    assert steps(db_url)["expand:r3_expand02"][0] == "done"
    r = helpers.run(["db", "check"], conf)
    assert (r.code, r.out.strip()) == (
        4, "data migrations pending: run `manage db migrate`")
    assert helpers.run(["db", "version", "--format", "json"], conf).out \
        .count('"steps": []') == 1


def _started(url, name, **info):
    helpers.query(url, "UPDATE manage_version SET state = 'started', "
                       "detail = :d WHERE kind = 'step' AND name = :n",
                  d=json.dumps(info), n=name)


def test_interrupted_running_and_unknown_steps(sqlite_url, tmp_path):
    """A step left `started`: its process is gone (interrupted), alive
    (running), or on another host (cannot tell)."""
    helpers.deploy(sqlite_url, 2).sync()
    m = helpers.deploy(sqlite_url, 3)
    m.expand()
    # As if a run was killed inside r3_expand02 (rolled back on SQLite).
    helpers.query(sqlite_url, "UPDATE alembic_version SET version_num = "
                              "'r3_expand01' WHERE version_num = "
                              "'r3_expand02'")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _started(sqlite_url, "expand:r3_expand02", command="expand",
             host=socket.gethostname(), pid=dead.pid)
    conf = helpers.write_config(tmp_path, sqlite_url)
    r = helpers.run(["db", "check"], conf)
    assert r.code == 3
    assert r.out.strip() == (
        "expand revision r3_expand02 was interrupted (pid %d on host %s): "
        "run `manage db expand` again to resume; it continues from what "
        "was applied" % (dead.pid, socket.gethostname()))

    alive = subprocess.Popen([sys.executable, "-c",
                              "import time; time.sleep(60)"])
    try:
        _started(sqlite_url, "expand:r3_expand02", command="sync",
                 host=socket.gethostname(), pid=alive.pid)
        r = helpers.run(["db", "check"], conf)
        assert "expand revision r3_expand02 is running (pid %d" % alive.pid \
            in r.out and "wait for it to finish" in r.out
    finally:
        alive.kill()
        alive.wait()
    _started(sqlite_url, "expand:r3_expand02", command="sync",
             host="other-host", pid=1)
    r = helpers.run(["db", "version"], conf)
    assert "unfinished: expand revision r3_expand02 interrupted or still " \
           "running" in r.out
    assert "if that run is gone, run `manage db sync` again" in r.out
    r = helpers.run(["db", "sync"], conf)
    assert r.code == 0, r.err
    assert helpers.run(["db", "check"], conf).code == 0


def test_data_batches_are_journaled(db_url, tmp_path):
    old = helpers.deploy(db_url, 1)
    old.sync()
    helpers.query(db_url, "INSERT INTO users (id, name, email) VALUES "
                  + ", ".join("(%d, 'n%d', 'u%d@x.org')" % (i, i, i)
                              for i in range(1, 251)))
    conf = helpers.write_config(tmp_path, db_url, batch_size=100,
                                batch_min_size=100, batch_max_size=100)
    assert helpers.run(["db", "expand"], conf).code == 0
    assert helpers.run(["db", "migrate"], conf).code == 0
    journal = steps(db_url)
    for name in ("users_display_name", "users_email_domain"):
        state, rows, info = journal["migrate:" + name]
        assert (state, rows, info["pid"]) == ("done", 250, os.getpid())
    assert helpers.run(["db", "check"], conf).code == 5


def test_interrupted_and_failed_data_migrations(sqlite_url, tmp_path):
    helpers.deploy(sqlite_url, 1).sync()
    helpers.query(sqlite_url, "INSERT INTO users (id, name, email, settings)"
                              " VALUES (1, 'a', 'a@b.c', 'not json')")
    conf = helpers.write_config(tmp_path, sqlite_url)
    assert helpers.run(["db", "expand"], conf).code == 0
    r = helpers.run(["db", "migrate"], conf)
    assert r.code == 6
    r = helpers.run(["db", "check"], conf)
    assert r.code == 4
    assert r.out.startswith("data migration users_settings_columns failed:")
    assert "then run `manage db migrate` again" in r.out
    # A migration whose run was killed stays "running" in its record.
    helpers.query(sqlite_url, "UPDATE manage_version SET state = 'running' "
                              "WHERE kind = 'data' AND name = "
                              "'users_address_table'")
    helpers.query(sqlite_url, "UPDATE manage_version SET state = 'pending' "
                              "WHERE name = 'users_settings_columns'")
    r = helpers.run(["db", "check"], conf)
    assert r.out.startswith("data migration users_address_table did not "
                            "finish (an earlier run")


# -- resuming: the helpers of manage.ops tolerate what was applied ----------
def test_resume_tolerates_what_a_crashed_revision_applied(db_url, tmp_path,
                                                         repo):
    """MySQL cannot roll back DDL: a killed expand leaves columns and a
    table; a killed contract leaves columns dropped.  Run again, each
    revision skips what is there as intended."""
    helpers.deploy(db_url, 2).sync()
    helpers.query(db_url, "ALTER TABLE projects ADD visibility VARCHAR(16)")
    helpers.query(db_url, "ALTER TABLE users ADD theme VARCHAR(32)")
    helpers.query(db_url, "CREATE TABLE user_addresses (id INTEGER NOT NULL "
                          "PRIMARY KEY, user_id INTEGER NOT NULL UNIQUE "
                          "REFERENCES users (id), address VARCHAR(255) "
                          "NOT NULL)")
    conf = helpers.write_config(tmp_path, db_url, repository=repo.path)
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 0, r.err
    assert "applied 2 revision(s) (r3_expand01, r3_expand02)" in r.out
    assert helpers.run(["db", "migrate"], conf).code == 0
    # Contract fails inside r3_contract02, after dropping users.address
    # (as a MySQL run killed there would leave it).
    edit = helpers.edit_revision
    edit(repo.path, "r3_contract02", '    drop_column("users", "address")\n',
         '    drop_column("users", "address")\n'
         '    raise RuntimeError("killed")\n')
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 1 and "RuntimeError: killed" in r.err
    # MySQL kept what the revision did before it failed; the others rolled
    # it back whole.
    left = [c[0] for c in helpers.schema_snapshot(db_url)["users"]["columns"]]
    assert ("address" in left) == (not db_url.startswith("mysql"))
    edit(repo.path, "r3_contract02", '    raise RuntimeError("killed")\n',
         "")
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 0, r.err
    assert helpers.run(["db", "check"], conf).code == 0
    cols = [c[0] for c in helpers.schema_snapshot(db_url)["users"]["columns"]]
    assert cols == ["id", "email", "display_name", "email_domain", "theme",
                    "language"]


def test_resume_when_the_first_revision_was_interrupted(db_url, tmp_path):
    """Killed after r1_expand01 created its tables but before its version
    was committed (MySQL): the database has tables and no version, but the
    journal shows it is manage's; run again, the tables are accepted."""
    helpers.deploy(db_url, 1).sync()
    helpers.query(db_url, "DELETE FROM alembic_version")
    helpers.query(db_url, "DELETE FROM manage_version WHERE kind <> 'step' "
                          "OR name <> 'expand:r1_expand01'")
    _started(db_url, "expand:r1_expand01", command="expand",
             host="elsewhere", pid=1)
    conf = helpers.write_config(tmp_path, db_url)
    r = helpers.run(["db", "check"], conf)
    assert r.code == 3
    assert r.out.startswith("expand revision r1_expand01 did not finish")
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 0, r.err
    assert "applied 4 revision(s)" in r.out


@pytest.mark.parametrize("statement, message", [
    ("ALTER TABLE users ADD theme INTEGER",
     "column users.theme exists, but with type INTEGER"),
    ("ALTER TABLE users ADD theme VARCHAR(32) NOT NULL DEFAULT 'x'",
     "column users.theme exists, but with NOT NULL"),
    ("CREATE TABLE user_addresses (id INTEGER PRIMARY KEY, addr TEXT)",
     "table user_addresses exists with columns (id, addr), not the intended "
     "(id, user_id, address)"),
])
def test_resume_refuses_what_differs(db_url, tmp_path, statement, message):
    helpers.deploy(db_url, 2).sync()
    helpers.query(db_url, statement)
    conf = helpers.write_config(tmp_path, db_url)
    before = helpers.schema_snapshot(db_url)
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 1
    assert message in r.err, r.err
    assert "resolve the difference by hand" in r.err
    assert len(r.err.splitlines()) == 1
    after = helpers.schema_snapshot(db_url)
    assert after["users"] == before["users"] or \
        after["projects"] != before["projects"]  # r3_expand01 may apply
    assert helpers.run(["db", "check"], conf).out.startswith(
        "expand revision r3_expand02 failed: ")


def test_version_reads_journal_without_writing(db_url, tmp_path):
    conf = helpers.write_config(tmp_path, db_url)
    helpers.run(["db", "expand"], conf)
    before = helpers.query(db_url, "SELECT * FROM manage_version ORDER BY "
                                   "kind, name")
    for action in ("version", "check"):
        helpers.run(["db", action], conf)
    assert helpers.query(db_url, "SELECT * FROM manage_version ORDER BY "
                                 "kind, name") == before
