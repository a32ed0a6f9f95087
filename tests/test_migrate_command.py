"""``manage db migrate`` on the reference schema, on every engine.

Rows are written by release 1 ("old code"), the bundled repository then
expands to head and migrates.  Every test ends by checking each row's
values against what the new code expects.
"""

import io
import json
import os
import signal
import subprocess
import threading
import time

import pytest
import sqlalchemy as sa

from manage import cli, database, version_table as vt
from tests import helpers

MIGRATIONS = ("users_display_name", "users_email_domain",
              "projects_visibility", "users_address_table",
              "users_settings_columns")


def user(i):
    settings = None if i % 4 == 0 else json.dumps(
        {"theme": ("dark", "light")[i % 2], "language": "l%d" % (i % 3),
         "other": i})
    return {"id": i, "name": "user %d" % i,
            "email": "U%d@Example%d.org" % (i, i % 5), "settings": settings,
            "address": "%d Elm St" % i if i % 3 == 0 else None}


def load(url, ids, projects=True):
    """Rows as old code writes them (release 1 columns only)."""
    engine = database.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO users (id, name, email, settings, address) VALUES "
            "(:id, :name, :email, :settings, :address)"),
            [user(i) for i in ids])
        if projects:
            conn.execute(sa.text(
                "INSERT INTO projects (id, owner_id, title, is_public) "
                "VALUES (:id, :id, :title, :pub)"),
                [{"id": i, "title": "p%d" % i, "pub": i % 3 == 0}
                 for i in ids if i % 2])
    engine.dispose()


def expected_pending(ids):
    """Rows each migration has to move for users ``ids``."""
    ids = list(ids)
    return {
        "users_display_name": len(ids),
        "users_email_domain": len(ids),
        "projects_visibility": len([i for i in ids if i % 2]),
        "users_address_table": len([i for i in ids if i % 3 == 0]),
        "users_settings_columns": len([i for i in ids if i % 4]),
    }


def assert_rows(url, ids, addresses=True, project_owners=None):
    """Every user and project holds what the new code expects."""
    rows = helpers.query(url, "SELECT id, display_name, email_domain, theme, "
                              "language FROM users ORDER BY id")
    want = []
    for i in ids:
        u = user(i)
        s = json.loads(u["settings"]) if u["settings"] else {}
        want.append((i, u["name"], u["email"].split("@")[1].lower(),
                     s.get("theme"), s.get("language")))
    assert rows == want
    if addresses:
        assert helpers.query(url, "SELECT user_id, address FROM "
                                  "user_addresses ORDER BY user_id") == [
            (i, user(i)["address"]) for i in ids if user(i)["address"]]
    assert helpers.query(url, "SELECT id, visibility FROM projects ORDER BY "
                              "id") == [
        (i, "public" if i % 3 == 0 else "private")
        for i in (project_owners or ids) if i % 2]


def recorded(url):
    engine = database.create_engine(url)
    with engine.connect() as conn:
        rows = vt.read(conn, vt.DATA)
    engine.dispose()
    return rows


def rows_done(url):
    return {name: r["rows_done"] for name, r in recorded(url).items()}


def expanded(url, tmp_path, users, **migration):
    """Release 1 with ``users`` rows, expanded to head; returns a config."""
    helpers.deploy(url, 1).sync()
    load(url, users)
    conf = helpers.write_config(tmp_path, url, **migration)
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 0, r.err
    return conf


def test_max_count_exit_codes_and_version(db_url, tmp_path):
    ids = range(1, 31)
    conf = expanded(db_url, tmp_path, ids)
    total = sum(expected_pending(ids).values())
    r = helpers.run(["db", "migrate", "--max-count", "10"], conf)
    assert r.code == 4, r.err
    assert "work remains: run `manage db migrate` again" in r.out
    assert rows_done(db_url)["users_display_name"] == 10
    assert sum(rows_done(db_url).values()) == 10
    version = json.loads(helpers.run(["db", "version", "--format", "json"],
                                     conf).out)
    first = version["data_migrations"][0]
    assert (first["name"], first["rows_done"], first["rows_remaining"]) == (
        "users_display_name", 10, 20)
    text = helpers.run(["db", "version"], conf).out
    assert "users_display_name           pending  10 rows done, " \
           "20 remaining" in text
    runs = 1
    while True:
        r = helpers.run(["db", "migrate", "--max-count", "10"], conf)
        runs += 1
        assert r.code in (0, 4), r.err
        assert sum(rows_done(db_url).values()) == min(10 * runs, total)
        if r.code == 0:
            break
    assert runs == -(-total // 10)
    assert rows_done(db_url) == expected_pending(ids)
    assert helpers.run(["db", "migrate"], conf).code == 0
    assert helpers.run(["db", "migrate", "--max-count", "1"], conf).code == 0
    assert_rows(db_url, ids)


def test_failed_migration_exits_6_and_the_others_still_run(db_url, tmp_path):
    ids = range(1, 21)
    conf = expanded(db_url, tmp_path, ids)
    helpers.query(db_url, "DROP TABLE user_addresses")
    # The copy's triggers on it went with the table, and migrate would
    # refuse to start (manage.verify); forget the copy's record so that the
    # migrations run and this one fails.
    helpers.query(db_url, "DELETE FROM manage_version WHERE kind = 'sync' "
                          "AND name = 'msync_users_address_to_user_addresses'")
    r = helpers.run(["db", "migrate"], conf)
    assert r.code == 6
    assert r.err.startswith("manage: error: 1 data migration(s) failed: "
                            "users_address_table: ")
    states = {n: r["state"] for n, r in recorded(db_url).items()}
    assert states == dict({n: "done" for n in MIGRATIONS},
                          users_address_table="failed")
    assert_rows(db_url, ids, addresses=False)


def test_resume_after_sigkill(db_url, tmp_path):
    """SIGKILL a migrate process mid-run; the next run resumes from the
    saved cursor and moves each row exactly once."""
    ids = range(1, 8001)
    conf = expanded(db_url, tmp_path, ids, batch_size=100,
                    batch_min_size=100, batch_max_size=100, batch_pause=0.01)
    proc = subprocess.Popen([helpers.MANAGE, "--config-file", conf, "db",
                             "migrate"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            done = rows_done(db_url) if _has_progress(db_url) else {}
            if done.get("users_display_name", 0) >= 1000:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed = recorded(db_url)["users_display_name"]
    assert killed["state"] == "running"
    assert 1000 <= killed["rows_done"] < len(ids)
    cursor = json.loads(killed["cursor"])
    assert cursor == {"after": killed["rows_done"], "until": len(ids)}
    r = helpers.run(["db", "migrate"], conf)
    assert r.code == 0, r.err
    # Each row was counted once: the killed batch rolled back whole.
    assert rows_done(db_url) == expected_pending(ids)
    assert all(r["cursor"] is None for r in recorded(db_url).values())
    assert_rows(db_url, ids)


def _has_progress(url):
    return bool(helpers.query(url, "SELECT count(*) FROM manage_version "
                                   "WHERE kind = 'data'")[0][0])


class OldCodeWriter(threading.Thread):
    """Old code inserting users (release 1 columns) as fast as it can."""

    def __init__(self, url, first_id):
        super().__init__(daemon=True)
        self.engine = database.create_engine(url)
        self.next_id = first_id
        self.stop = threading.Event()
        self.errors = []

    def run(self):
        while not self.stop.is_set():
            rows = [dict(user(i), address=None)
                    for i in range(self.next_id, self.next_id + 10)]
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.text(
                        "INSERT INTO users (id, name, email, settings) "
                        "VALUES (:id, :name, :email, :settings)"), rows)
            except sa.exc.OperationalError as exc:  # SQLite: locked
                self.errors.append(exc)
                continue
            self.next_id += 10
            time.sleep(0.002)


def test_high_water_mark_under_concurrent_inserts(db_url, tmp_path):
    ids = range(1, 3001)
    conf = expanded(db_url, tmp_path, ids, batch_size=100,
                    batch_max_size=200)
    writer = OldCodeWriter(db_url, len(ids) + 1)
    writer.start()
    try:
        while writer.next_id < len(ids) + 50:
            time.sleep(0.01)
        r = helpers.run(["db", "migrate"], conf)
        during = writer.next_id
        assert writer.is_alive()
    finally:
        writer.stop.set()
        writer.join(30)
        writer.engine.dispose()
    assert r.code == 0, r.err
    assert during > len(ids) + 50
    assert all("locked" in str(e) for e in writer.errors)
    # Rows written during migrate were synced by the triggers.
    assert_rows(db_url, range(1, writer.next_id), addresses=False,
                project_owners=ids)
    assert helpers.run(["db", "contract"], conf).code == 0


def test_contract_counts_instead_of_trusting_the_record(db_url, tmp_path):
    ids = range(1, 21)
    conf = expanded(db_url, tmp_path, ids)
    assert helpers.run(["db", "migrate", "--max-count", "5"], conf).code == 4
    # A record that lies: every migration marked done.
    engine = database.create_engine(db_url)
    with engine.begin() as conn:
        for name in MIGRATIONS:
            vt.upsert(conn, vt.DATA, name, state=vt.DONE)
    engine.dispose()
    before = helpers.schema_snapshot(db_url)
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 1
    assert "contract refused: rows still need migrating (" \
           "users_display_name: 15, users_email_domain: 20" in r.err
    assert helpers.schema_snapshot(db_url) == before
    states = {n: r["state"] for n, r in recorded(db_url).items()}
    assert set(states.values()) == {"pending"}
    assert helpers.run(["db", "check"], conf).code == 4
    assert helpers.run(["db", "migrate"], conf).code == 0
    assert helpers.run(["db", "contract"], conf).code == 0
    assert helpers.query(db_url, "SELECT count(*) FROM user_addresses") == [
        (expected_pending(ids)["users_address_table"],)]


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stream", [io.StringIO, Terminal])
def test_progress_display(sqlite_url, tmp_path, stream):
    ids = range(1, 501)
    expanded(sqlite_url, tmp_path, ids)
    out = stream()
    manager = helpers.manager(sqlite_url, batch_size=100,
                              batch_max_size=100)
    manager.migrate(observer=cli.MigrateProgress(out, interval=0))
    manager.close()
    text = out.getvalue()
    if stream is Terminal:
        assert "\rusers_display_name           [######" in text
        assert "] 100% 500 rows done, 0 remaining, " in text
        assert text.count("\n") == len(MIGRATIONS)
    else:
        lines = text.splitlines()
        assert lines[0] == "migrate: users_display_name: 500 rows to move"
        assert lines[1].startswith("migrate: users_display_name: 100 rows "
                                   "done, 400 remaining, ")
        assert " rows/s, " in lines[1] and lines[1].endswith(" left")
        assert "\r" not in text
