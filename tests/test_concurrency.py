"""Bounded lock waits and one run at a time, on every engine."""

import os
import socket
import subprocess
import threading
import time

import pytest
import sqlalchemy as sa

from manage import database
from manage.exceptions import LockTimeoutError
from tests import helpers

SERVER_ENGINES = ["mysql", "postgresql"]


class PointReader(threading.Thread):
    """The application: point reads on a table, timing each one."""

    def __init__(self, url, sql):
        super().__init__(daemon=True)
        self.engine = database.create_engine(url)
        self.sql = sa.text(sql)
        self.stop = threading.Event()
        self.latencies = []
        self.errors = []

    def run(self):
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    conn.execute(self.sql).fetchall()
                except Exception as exc:  # counted, not raised
                    self.errors.append(exc)
                self.latencies.append(time.monotonic() - start)
                time.sleep(0.01)

    def finish(self):
        self.stop.set()
        self.join(10)
        self.engine.dispose()


@pytest.mark.parametrize("engine_name", SERVER_ENGINES)
def test_expand_gives_up_cleanly_behind_a_long_transaction(db_url):
    helpers.deploy(db_url, 2).sync()
    helpers.query(db_url, "INSERT INTO users (id, display_name, email) "
                          "VALUES (1, 'a', 'a@b.c')")
    helpers.query(db_url, "INSERT INTO projects (id, owner_id, title) "
                          "VALUES (1, 1, 'p')")
    timeout = 1.0
    new = helpers.deploy(db_url, 3)
    new.settings = new.settings.__class__(
        connection=db_url, lock_wait_timeout=timeout, lock_retries=2,
        lock_retry_backoff=0.2)
    blocker_engine = database.create_engine(db_url)
    blocker = blocker_engine.connect()
    try:
        blocker.execute(sa.text("SELECT * FROM projects")).fetchall()
        assert blocker.in_transaction()  # holds its lock on projects
        app = PointReader(db_url, "SELECT title FROM projects WHERE id = 1")
        app.start()
        try:
            time.sleep(0.2)
            with pytest.raises(LockTimeoutError) as info:
                new.expand()
            time.sleep(0.2)
        finally:
            app.finish()
        message = str(info.value)
        assert "table projects" in message
        assert "run the command again" in message
        # Nothing is half-done: release 3's first revision did not apply.
        snap = helpers.schema_snapshot(db_url)
        assert "visibility" not in [c[0] for c in
                                    snap["projects"]["columns"]]
        assert new.check().expand.current == "r2_expand01"
        # The application was never stalled beyond the bound, nor failed.
        assert app.errors == []
        assert len(app.latencies) > 10
        assert max(app.latencies) < timeout + 1.0, max(app.latencies)
    finally:
        blocker.rollback()  # the long transaction ends
        blocker.close()
        blocker_engine.dispose()
    result = new.expand()
    assert result.applied == ["r3_expand01", "r3_expand02"]
    new.close()


def _hold_run_lock(manager, held, release):
    with manager._run_lock():
        held.set()
        release.wait(30)


def test_second_run_refused_while_lock_held_read_only_allowed(db_url,
                                                              tmp_path):
    holder = helpers.manager(db_url)
    holder.sync()
    held, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=_hold_run_lock,
                              args=(holder, held, release))
    thread.start()
    try:
        assert held.wait(30)
        conf = helpers.write_config(tmp_path, db_url, run_lock_timeout=1)
        for action in ("expand", "migrate", "contract", "sync"):
            r = helpers.run(["db", action], conf)
            assert r.code == 7, (action, r.out)
            assert "another manage run (host %s, pid %d) holds the run lock"\
                % (socket.gethostname(), os.getpid()) in r.err
            assert "gave up after waiting 1s" in r.err
        assert helpers.run(["db", "check"], conf).code == 0
        assert helpers.run(["db", "version"], conf).code == 0
    finally:
        release.set()
        thread.join(30)
        holder.close()
    assert helpers.run(["db", "expand"], conf).code == 0


def test_two_concurrent_runs_never_interleave(db_url, tmp_path):
    conf = helpers.write_config(tmp_path, db_url, run_lock_timeout=120)
    argv = [helpers.MANAGE, "--config-file", conf, "db", "sync"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    for out, err, code in results:
        assert code == 0, err
    applied = [out for out, err, code in results
               if "expand: applied 4 revision(s)" in out]
    assert len(applied) == 1, results
    other = [out for out, err, code in results if out not in applied][0]
    assert "expand: nothing to do" in other
    assert "contract: nothing to do" in other
    assert helpers.run(["db", "check"], conf).code == 0


@pytest.mark.parametrize("engine_name", ["mysql", "postgresql"])
def test_long_database_names_have_run_locks_of_their_own(engine_name,
                                                         tmp_path):
    """Two databases whose names share their first 53 characters (MySQL
    lock names hold 64) do not share a run lock."""
    from tests.conftest import server_for
    server = server_for(engine_name)
    import secrets
    stem = "t" + "x" * 52 + secrets.token_hex(3)
    names = [stem + "_a", stem + "_b"]
    urls = [server.create_database(n) for n in names]
    try:
        holder = helpers.manager(urls[0])
        held, release = threading.Event(), threading.Event()
        thread = threading.Thread(target=_hold_run_lock,
                                  args=(holder, held, release))
        thread.start()
        try:
            assert held.wait(30)
            conf = helpers.write_config(tmp_path, urls[1],
                                        run_lock_timeout=1)
            r = helpers.run(["db", "sync"], conf)
            assert r.code == 0, r.err
            assert helpers.run(["db", "check"], conf).code == 0
            conf = helpers.write_config(tmp_path, urls[0],
                                        run_lock_timeout=1)
            assert helpers.run(["db", "sync"], conf).code == 7
        finally:
            release.set()
            thread.join(30)
            holder.close()
    finally:
        for name in names:
            server.drop_database(name)
