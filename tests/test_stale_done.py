"""A data migration recorded as done while rows need it again (issue 8,
input 10): ``version`` shows the live count and state, ``check`` says
migrate is needed (exit 4), ``migrate`` runs it again, contract passes; the
progress display ends at 100 % when the work is done.
"""

import io
import json

import sqlalchemy as sa

from manage import cli, database, version_table as vt
from manage.datamigration import Backfill
from manage.datamigration.progress import Recorder
from manage.status import Status
from tests import helpers
from tests.test_migrate_command import (MIGRATIONS, assert_rows,
                                        expanded, expected_pending, recorded)


def mark_done(url, names):
    engine = database.create_engine(url)
    with engine.begin() as conn:
        for name in names:
            vt.upsert(conn, vt.DATA, name, state=vt.DONE, rows_remaining=0,
                      cursor=None)
    engine.dispose()


def test_stale_done_is_counted_live_and_migrated_again(db_url, tmp_path):
    ids = range(1, 21)
    conf = expanded(db_url, tmp_path, ids)
    assert helpers.run(["db", "migrate", "--max-count", "5"], conf).code == 4
    mark_done(db_url, MIGRATIONS)  # a record that says more than was done
    version = json.loads(helpers.run(["db", "version", "--format", "json"],
                                     conf).out)
    live = {d["name"]: (d["state"], d["rows_remaining"])
            for d in version["data_migrations"]}
    want = dict(expected_pending(ids), users_display_name=15)
    assert live == {n: ("pending", want[n]) for n in MIGRATIONS}
    assert version["status"] == "migrate"
    assert "users_display_name           pending  5 rows done, 15 " \
           "remaining" in helpers.run(["db", "version"], conf).out
    r = helpers.run(["db", "check"], conf)
    assert r.code == 4
    assert "run `manage db migrate`" in r.out
    r = helpers.run(["db", "migrate"], conf)
    assert r.code == 0, r.err
    assert {n: row["state"] for n, row in recorded(db_url).items()} == {
        n: "done" for n in MIGRATIONS}
    assert helpers.run(["db", "check"], conf).code == 5
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 0, r.err
    assert_rows(db_url, ids)


class Double(Backfill):
    name = "items_double"
    table = "items"
    values = {"b": "{a} * 2"}
    where = "{b} IS NULL"


def items_manager(url, tmp_path):
    """Release 1 expanded, plus a table of its own with no trigger: rows
    written after its migration finished need it again."""
    repo = helpers.release_repository(tmp_path, 1)
    helpers.manager(url, repository=repo, plugins=[]).expand()
    helpers.query(url, "CREATE TABLE items (id INTEGER PRIMARY KEY, "
                       "a INTEGER NOT NULL, b INTEGER)")
    insert(url, range(1, 301))
    return helpers.manager(url, repository=repo, plugins=[Double()],
                           batch_size=100, batch_min_size=100,
                           batch_max_size=100)


def insert(url, ids):
    engine = database.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO items (id, a) VALUES (:id, :a)"),
                     [{"id": i, "a": i} for i in ids])
    engine.dispose()


def test_rows_written_after_done_run_it_again(db_url, tmp_path):
    m = items_manager(db_url, tmp_path)
    assert [(o.state, o.rows_moved) for o in m.migrate().outcomes] == [
        ("done", 300)]
    insert(db_url, range(301, 351))  # written since, by code without it
    version = m.version()
    state = version.data_migrations[0]
    assert (state.state, state.rows_remaining) == ("pending", 50)
    assert version.status == Status.NEEDS_MIGRATE
    assert [(o.state, o.rows_moved, o.rows_remaining)
            for o in m.migrate().outcomes] == [("done", 50, 0)]
    assert helpers.query(db_url, "SELECT count(*) FROM items WHERE b IS "
                                 "NULL OR b <> 2 * a") == [(0,)]
    state = m.version().data_migrations[0]
    assert (state.state, state.rows_remaining) == ("done", 0)
    # Nothing pending: a done migration stays done, no batch runs.
    seen = Recorder()
    assert [(o.state, o.rows_moved) for o in
            m.migrate(observer=seen).outcomes] == [("done", 0)]
    assert seen.batches == []


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_ends_at_100_percent_when_the_count_was_high(db_url,
                                                              tmp_path):
    """Rows counted at the start but fixed by someone else meanwhile: the
    last batch event carries the live count, so the bar ends at 100 %."""
    m = items_manager(db_url, tmp_path)

    class FixAhead(cli.MigrateProgress):
        def batch(self, event):
            if event.rows_done == 100:  # another writer fixes 100 rows
                helpers.query(db_url, "UPDATE items SET b = 2 * a WHERE "
                                      "id > 200")
            super().batch(event)

    seen, out = Recorder(), Terminal()
    progress = FixAhead(out, interval=0)
    m.migrate(observer=progress)
    m.migrate(observer=seen)  # nothing left: no bar
    text = out.getvalue()
    assert "] 100% 200 rows done, 0 remaining" in text
    assert seen.batches == []
    assert helpers.query(db_url, "SELECT count(*) FROM items WHERE "
                                 "b = 2 * a") == [(300,)]
