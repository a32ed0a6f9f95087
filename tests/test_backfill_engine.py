"""The batched backfill engine, driven through the library on every engine.

A small table of its own (``items``: ``b`` must become ``a * 2``) keeps
the cases exact; the reference schema is exercised through the CLI in
test_migrate_command.py.
"""

import json

import pytest
import sqlalchemy as sa

from manage import config, database, version_table as vt
from manage.datamigration import Backfill, DataMigration
from manage.datamigration.progress import Recorder
from manage.datamigration.runner import Runner
from manage.datamigration.throttle import QueryCheck, Throttle
from tests import helpers

ROWS = 1000


class Double(Backfill):
    name = "items_double"
    table = "items"
    values = {"b": "{a} * 2"}
    where = "{b} IS NULL"


class FakeClock:
    """Each reading is ``step`` seconds after the previous one."""

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


@pytest.fixture
def items(db_url):
    helpers.query(db_url, "CREATE TABLE items (id INTEGER PRIMARY KEY, "
                          "a INTEGER NOT NULL, b INTEGER)")
    insert(db_url, range(1, ROWS + 1))
    engine = database.create_engine(db_url)
    yield engine
    engine.dispose()


def insert(url, ids):
    engine = database.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO items (id, a) VALUES (:id, :a)"),
                     [{"id": i, "a": i} for i in ids])
    engine.dispose()


def runner(engine, plugin=None, observer=None, clock=None, throttle=None):
    """Batches start at 100 rows within [10, 400]; by default each takes
    exactly the 0.1 s target, so the size stays."""
    settings = config.Settings(connection=str(engine.url),
                               batch_target_seconds=0.1, batch_size=100,
                               batch_min_size=10, batch_max_size=400)
    return Runner(engine, [plugin or Double()], settings, observer,
                  throttle=throttle, clock=clock or FakeClock(0.1),
                  sleep=lambda s: None)


def assert_all_doubled(url, count=ROWS):
    rows = helpers.query(url, "SELECT id, a, b FROM items ORDER BY id")
    assert len(rows) == count
    assert [r for r in rows if r[2] != 2 * r[1]] == []


def record(url, name="items_double"):
    """(state, rows_done, rows_remaining, cursor) of a data migration."""
    engine = database.create_engine(url)
    with engine.connect() as conn:
        row = vt.read(conn, vt.DATA)[name]
    engine.dispose()
    return tuple(row[c] for c in ("state", "rows_done", "rows_remaining",
                                  "cursor"))


def test_backfill_moves_every_row_in_key_order(items, db_url):
    seen = Recorder()
    result = runner(items, observer=seen).run()
    assert [(o.state, o.rows_moved, o.rows_remaining)
            for o in result.outcomes] == [("done", ROWS, 0)]
    assert_all_doubled(db_url)
    assert record(db_url) == ("done", ROWS, 0, None)
    assert sum(b.scanned for b in seen.batches) == ROWS
    assert seen.events[0] == ("started", "items_double", ROWS)


def test_adaptive_batch_size_stays_within_bounds(items, db_url):
    # Every batch "takes" 1 s against a 0.1 s target: shrink to the floor.
    slow = Recorder()
    runner(items, observer=slow, clock=FakeClock(1.0)).run(max_count=500)
    sizes = [b.limit for b in slow.batches]
    assert sum(sizes) == 500  # the last batch is cut to the budget
    sizes = sizes[:-1]
    assert sizes[:4] == [100, 50, 25, 12] and sizes[-1] == 10
    assert all(10 <= s <= 400 for s in sizes)
    # Batches that take no time grow, at most doubling, up to the ceiling.
    fast = Recorder()
    runner(items, observer=fast, clock=FakeClock(0.0)).run()
    sizes = [b.limit for b in fast.batches]
    assert sizes == [100, 200, 400]  # 500 rows were left
    assert all(10 <= s <= 400 for s in sizes)
    assert_all_doubled(db_url)


def test_max_count_stops_exactly_and_resumes_from_the_cursor(items, db_url):
    first = Recorder()
    result = runner(items, observer=first).run(max_count=250)
    assert [(o.state, o.rows_moved) for o in result.outcomes] == [
        ("pending", 250)]
    state, done, remaining, cursor = record(db_url)
    assert (state, done, remaining) == ("pending", 250, ROWS - 250)
    assert json.loads(cursor) == {"after": 250, "until": ROWS}
    assert helpers.query(db_url, "SELECT count(*) FROM items WHERE b IS "
                                 "NULL AND id <= 250") == [(0,)]
    second = Recorder()
    runner(items, observer=second).run()
    # The second run starts after the cursor: no key is scanned twice.
    assert sum(b.scanned for b in first.batches + second.batches) == ROWS
    assert record(db_url) == ("done", ROWS, 0, None)
    assert_all_doubled(db_url)


def test_high_water_mark_ends_the_pass_and_a_second_pass_takes_the_rest(
        items, db_url):
    """Rows written during a pass lie above its mark; with no trigger to
    fill them, the count after the pass finds them and a new pass runs."""

    class InsertDuringFirstBatch(Recorder):
        def batch(self, event):
            super().batch(event)
            if len(self.batches) == 1:
                insert(db_url, range(ROWS + 1, ROWS + 51))

    seen = InsertDuringFirstBatch()
    result = runner(items, observer=seen).run()
    assert [(o.state, o.rows_moved) for o in result.outcomes] == [
        ("done", ROWS + 50)]
    assert_all_doubled(db_url, ROWS + 50)


def test_throttle_waits_and_stops_resumably(items, db_url):
    helpers.query(db_url, "CREATE TABLE busy (n INTEGER)")
    helpers.query(db_url, "INSERT INTO busy (n) VALUES (1)")
    check = QueryCheck("SELECT count(*) FROM busy", 0, name="busy")
    throttle = Throttle([check], interval=1, max_wait=5,
                        sleep=lambda s: None, clock=FakeClock(1.0))
    seen = Recorder()
    result = runner(items, observer=seen, throttle=throttle).run()
    outcome = result.outcomes[0]
    assert (outcome.state, outcome.rows_moved) == ("pending", 0)
    assert "throttled: busy 1 > 0" in outcome.error
    assert [e[0] for e in seen.events] == ["started", "throttled",
                                           "finished"]
    assert helpers.query(db_url, "SELECT count(*) FROM items WHERE b IS "
                                 "NOT NULL") == [(0,)]
    helpers.query(db_url, "DELETE FROM busy")
    result = runner(items, throttle=throttle).run()
    assert result.outcomes[0].state == "done"
    assert_all_doubled(db_url)


def test_plain_plugin_contract_still_runs(items, db_url):
    """A plugin with only pending() and migrate(), as before the engine."""

    class Plain(DataMigration):
        name = "items_plain"

        def pending(self, connection):
            return connection.execute(sa.text(
                "SELECT count(*) FROM items WHERE b IS NULL")).scalar()

        def migrate(self, connection, limit):
            return Double().migrate(connection, limit)

    result = runner(items, plugin=Plain()).run(max_count=300)
    assert [(o.state, o.rows_moved) for o in result.outcomes] == [
        ("pending", 300)]
    result = runner(items, plugin=Plain()).run()
    assert [(o.state, o.rows_moved) for o in result.outcomes] == [
        ("done", ROWS - 300)]
    assert_all_doubled(db_url)


def test_failure_is_recorded_and_keeps_the_cursor(items, db_url):
    class Breaks(Double):
        def migrate_range(self, connection, after, upper):
            if after is not None and after >= 300:
                raise RuntimeError("bad row near %d" % upper)
            return super().migrate_range(connection, after, upper)

    result = runner(items, plugin=Breaks()).run()
    outcome = result.outcomes[0]
    assert (outcome.state, outcome.rows_moved) == ("failed", 300)
    assert "RuntimeError: bad row near 400" in outcome.error
    state, done, _, cursor = record(db_url)
    assert (state, done, json.loads(cursor)["after"]) == ("failed", 300, 300)
    runner(items).run()
    assert record(db_url)[:2] == ("done", ROWS)
    assert_all_doubled(db_url)


def test_version_table_row_matches_each_committed_batch(items, db_url):
    class Check(Recorder):
        def batch(self, event):
            super().batch(event)
            state, done, remaining, cursor = record(db_url)
            assert (state, done, remaining) == (
                vt.RUNNING, event.rows_done, event.rows_remaining)
            assert json.loads(cursor)["after"] == event.rows_done

    runner(items, observer=Check()).run()
    assert_all_doubled(db_url)
