"""Restores that never make things worse, on every engine.

A damaged backup is refused before anything changes; a restore interrupted
(SIGTERM, Ctrl-C) or killed (SIGKILL) leaves the database as it was where
the restore is one transaction (PostgreSQL, SQLite), and marked as being
restored where it cannot be (MySQL/MariaDB), so that every command refuses
until a restore completes; the client tools end with manage, and nothing
holding the password is ever left in the temp folder.

The client tools are slowed down by wrappers on PATH that pass part of their
input on and then hang; SQLite's restore is held at its commit by a reader.
"""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests import helpers
from tests.test_backup import backup_path, fill, safety_path, state

#: The client tool that loads a backup, per engine (wrapped by the tests).
LOADERS = {"mysql": ("mariadb", "mysql"), "postgresql": ("psql",)}
DUMPERS = {"mysql": ("mariadb-dump", "mysqldump"),
           "postgresql": ("pg_dump",)}

WRAPPER = r'''#!%(python)s
"""%(name)s, slowed down: hang (mode hang), or pass %(limit)d bytes of the
input on to the real tool, then hang (feed) or fail (fail)."""
import os, subprocess, sys, time
with open(%(log)r, "a") as f:
    f.write("%%d\n" %% os.getpid())
if %(mode)r == "fail" and os.path.exists(%(ready)r):  # fails once
    os.execv(%(real)r, [%(real)r] + sys.argv[1:])
if %(mode)r == "hang":
    open(%(ready)r, "w").close()
    time.sleep(600)
    sys.exit(1)
child = subprocess.Popen([%(real)r] + sys.argv[1:], stdin=subprocess.PIPE,
                         close_fds=False)  # the credentials: /dev/fd/N
with open(%(log)r, "a") as f:
    f.write("%%d\n" %% child.pid)
data = b""
while len(data) < %(limit)d:
    chunk = os.read(0, %(limit)d - len(data))
    if not chunk:
        break
    data += chunk
child.stdin.write(data)
child.stdin.flush()
time.sleep(1.5)
open(%(ready)r, "w").close()
if %(mode)r == "fail":
    time.sleep(1.5)  # the tool ran what it was given
    child.kill()
    child.wait()
    sys.stderr.write("ERROR 1114 (HY000): The table is full (simulated)\n")
    sys.exit(1)
time.sleep(600)
'''


class Slowed:
    """Wrappers for client tools in ``tmp/bin``; ``env`` runs manage with
    them first on PATH and a temp folder of its own."""

    def __init__(self, tmp_path, names, mode, limit=0):
        self.bin = tmp_path / "slow-bin"
        self.bin.mkdir(exist_ok=True)
        self.log = tmp_path / "slow-pids.log"
        self.ready = tmp_path / "slow-ready"
        self.tmpdir = tmp_path / "manage-tmp"
        self.tmpdir.mkdir(exist_ok=True)
        import shutil
        for name in names:
            real = shutil.which(name)
            if real is None:
                continue
            script = self.bin / name
            script.write_text(WRAPPER % dict(
                python=sys.executable, name=name, real=real, mode=mode,
                limit=limit, log=str(self.log), ready=str(self.ready)))
            script.chmod(0o755)
        self.env = dict(os.environ, PATH="%s:%s" % (self.bin,
                                                    os.environ["PATH"]),
                        TMPDIR=str(self.tmpdir))

    def pids(self):
        return [int(p) for p in self.log.read_text().split()] \
            if self.log.exists() else []


def start(args, conf, env):
    argv = [helpers.MANAGE, "--config-file", conf] + list(args)
    return subprocess.Popen(argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def alive(pid):
    """Whether a process exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def prepared(db_url, tmp_path, more_rows=0):
    """Release 3 with rows (``more_rows`` users more, of 600 bytes each),
    backed up, then changed.  Returns the config, the backup, and the state
    in the backup and after the change."""
    conf = helpers.write_config(tmp_path, db_url)
    assert helpers.run(["db", "sync"], conf).code == 0
    fill(db_url)
    for start in range(0, more_rows, 500):
        helpers.query(db_url, "INSERT INTO users (id, display_name, email) "
                      "VALUES " + ", ".join(
                          "(%d, '%s', 'u%d@x.org')" % (i, "n" * 180, i)
                          for i in range(10 + start, 10 + start + 500)))
    backed = state(db_url)
    r = helpers.run(["db", "backup", str(tmp_path / "backups")], conf)
    assert r.code == 0, r.err
    path = backup_path(r.out)
    helpers.query(db_url, "UPDATE users SET display_name = 'changed'")
    helpers.query(db_url, "INSERT INTO users (id, display_name, email) "
                          "VALUES (3, 'cy', 'cy@z.org')")
    changed = state(db_url)
    assert changed != backed
    return conf, path, backed, changed


def test_a_damaged_backup_is_refused_before_anything_changes(db_url,
                                                             tmp_path):
    conf, path, backed, changed = prepared(db_url, tmp_path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * 0.6))
    files = sorted(os.listdir(tmp_path / "backups"))

    r = helpers.run(["db", "restore", path], conf)
    assert (r.code, r.out) == (1, "")
    assert r.err == ("manage: error: backup file %s is damaged or incomplete "
                     "(%d bytes, its manifest says %d); nothing was "
                     "restored\n" % (path, int(size * 0.6), size))
    # Without the manifest, reading the whole backup finds it out.
    r = helpers.run(["db", "restore", "--without-manifest", path], conf)
    assert (r.code, r.out) == (1, "")
    assert re.fullmatch(r"manage: error: backup file %s is damaged or "
                        r"incomplete \(.+\); nothing was restored\n"
                        % re.escape(path), r.err), r.err
    assert state(db_url) == changed
    assert sorted(os.listdir(tmp_path / "backups")) == files  # no safety
    r = helpers.run(["db", "check"], conf)
    assert r.code == 0, r.out + r.err


def test_restore_refuses_what_is_not_this_databases_backup(db_url, tmp_path):
    conf, path, backed, changed = prepared(db_url, tmp_path)
    manifest = path + ".manifest"
    data = json.loads(open(manifest).read())
    assert data["sha256"] and data["size"] == os.path.getsize(path)
    name = data["database"]
    (tmp_path / "empty").write_bytes(b"")
    refusals = [
        ([str(tmp_path / "empty")], "backup file %s is empty; nothing was "
         "restored" % (tmp_path / "empty")),
        ([str(tmp_path)], "backup file %s is not a file; nothing was "
         "restored" % tmp_path),
    ]
    for argv, message in refusals:
        r = helpers.run(["db", "restore"] + argv, conf)
        assert (r.code, r.err) == (1, "manage: error: %s\n" % message)

    # A backup of another database, then one of a release this code does
    # not know, then one without its manifest.
    with open(manifest, "w") as f:
        json.dump(dict(data, database="elsewhere"), f)
    r = helpers.run(["db", "restore", path], conf)
    assert (r.code, r.err) == (1, "manage: error: %s is a backup of the "
                               "database elsewhere, not of %s; nothing was "
                               "restored. To copy its content into %s, run "
                               "`manage db restore --other-database %s`\n"
                               % (path, name, name, path))
    with open(manifest, "w") as f:
        json.dump(dict(data, revisions=["r9_expand01"]), f)
    r = helpers.run(["db", "restore", path], conf)
    assert (r.code, r.err) == (1, "manage: error: %s holds revision "
                               "r9_expand01, which this code does not know: "
                               "it was taken from a newer release or another "
                               "application; nothing was restored. Restore "
                               "it with the release that made it\n" % path)
    os.unlink(manifest)
    r = helpers.run(["db", "restore", path], conf)
    assert r.code == 1
    assert r.err.startswith("manage: error: backup file %s has no manifest "
                            "(%s): the backup did not finish" % (
                                path, manifest)), r.err
    assert state(db_url) == changed
    assert sorted(os.listdir(tmp_path / "backups")) == [
        os.path.basename(path)]

    # Told to: a backup without manifest, into another database's name,
    # with no safety backup.
    with open(manifest, "w") as f:
        json.dump(dict(data, database="elsewhere"), f)
    r = helpers.run(["db", "restore", "--other-database",
                     "--no-safety-backup", path], conf)
    assert (r.code, r.out) == (0, "restore: the database now holds the "
                               "content of %s\n" % path), r.err
    assert state(db_url) == backed
    os.unlink(manifest)
    helpers.query(db_url, "DELETE FROM user_addresses")
    r = helpers.run(["db", "restore", "--without-manifest",
                     "--safety-backup-dir", str(tmp_path / "safety"), path],
                    conf)
    assert r.code == 0, r.err
    assert os.path.dirname(safety_path(r.out)) == str(tmp_path / "safety")
    assert state(db_url) == backed


def test_restore_waits_for_the_run_lock_and_gives_up_unchanged(db_url,
                                                               tmp_path):
    conf, path, backed, changed = prepared(db_url, tmp_path)
    holder = helpers.manager(db_url)
    try:
        with holder._run_lock():
            r = helpers.run(["db", "restore", path], helpers.write_config(
                tmp_path / "backups", db_url, run_lock_timeout=0.5))
    finally:
        holder.close()
    assert r.code == 7
    assert "holds the run lock of this database; gave up after waiting " \
        "0.5s" in r.err and len(r.err.splitlines()) == 1, r.err
    assert state(db_url) == changed


def _interrupt_restore(db_url, tmp_path, engine_name, signum):
    """Start a restore, stop it mid-load with ``signum``; returns what the
    test needs."""
    conf, path, backed, changed = prepared(db_url, tmp_path)
    if engine_name == "sqlite":
        slow = Slowed(tmp_path, (), "feed")
        reader = sqlite3.connect(db_url[len("sqlite:///"):])
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM users").fetchall()
    else:
        # Past the drops and the first tables (MySQL: alembic_version and
        # manage_version; users comes last).
        slow = Slowed(tmp_path, LOADERS[engine_name], "feed",
                      limit=os.path.getsize(path) // 2)
        reader = None
    proc = start(["db", "restore", path], conf, slow.env)
    try:
        if reader is None:
            wait_for(slow.ready.exists, "the restore to load")
        else:
            line = proc.stdout.readline()
            assert line.startswith("restore: safety backup"), line
            time.sleep(1.5)  # copying, then waiting at the commit
        if engine_name == "postgresql":
            # The load's transaction dropped users (not committed).
            wait_for(lambda: helpers.query(
                db_url, "SELECT count(*) FROM pg_locks WHERE relation = "
                "'users'::regclass AND mode = 'AccessExclusiveLock' AND "
                "granted") == [(1,)], "the load to drop users")
        elif engine_name == "mysql":
            wait_for(lambda: helpers.query(
                db_url, "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = 'users'")
                == [(0,)], "the load to drop users")
        assert proc.poll() is None
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if reader is not None:
            reader.close()
    argv = ["--config-file", conf]     # its advice, as the docs write it
    return (conf, path, backed, changed, slow, proc.returncode,
            helpers.plain_advice(out, argv, False),
            helpers.plain_advice(err, argv, False))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "Ctrl-C"])
def test_an_interrupted_restore_leaves_the_database_as_it_was_or_marked(
        db_url, tmp_path, engine_name, signum):
    conf, path, backed, changed, slow, code, out, err = _interrupt_restore(
        db_url, tmp_path, engine_name, signum)
    by = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    assert code == 128 + signum, err
    assert len(err.splitlines()) == 1, err
    # The tools ended with manage, before it let go of the run lock.
    for pid in slow.pids():
        assert not alive(pid), pid
    assert os.listdir(slow.tmpdir) == []
    if engine_name != "mysql":
        assert err == ("manage: error: restore interrupted by %s: nothing "
                       "was restored: its transaction was rolled back, the "
                       "database is as it was\n" % by)
        assert state(db_url) == changed
        r = helpers.run(["db", "check"], conf)
        assert r.code == 0, r.out + r.err
        r = helpers.run(["db", "migrate"], conf)  # the lock is free
        assert r.code == 0, r.err
        return
    safety = safety_path(out)
    mark = ("the database is partly restored: a restore from %s started at "
            "\\S+ \\S+ UTC and did not finish, so its tables are "
            "incomplete. Run `manage db restore %s` again, or go back to "
            "the database as it was before it with `manage db restore %s`"
            % (re.escape(path), re.escape(path), re.escape(safety)))
    assert re.fullmatch("manage: error: restore interrupted by %s: %s\n"
                        % (by, mark), err), err
    # MySQL commits each table: the database is partial (users is not
    # loaded yet) and every command refuses, saying what to run.
    assert "users" not in helpers.schema_snapshot(db_url)
    for argv in (["check"], ["version"], ["migrate"], ["expand"],
                 ["backup", str(tmp_path / "b")]):
        r = helpers.run(["db"] + argv, conf)
        assert r.code == 1, (argv, r.out)
        assert re.fullmatch("manage: error: %s\n" % mark, r.err), r.err
    # Finishing the restore; then the safety backup puts back what was.
    r = helpers.run(["db", "restore", path], conf)
    assert r.code == 0, r.err
    assert "safety backup" not in r.out  # the partial database: none
    assert state(db_url) == backed
    assert helpers.run(["db", "check"], conf).code == 0
    r = helpers.run(["db", "restore", "--no-safety-backup", safety], conf)
    assert r.code == 0, r.err
    assert state(db_url) == changed


def test_a_killed_backup_or_restore_leaves_no_password_nor_tool(
        db_url, tmp_path, engine_name):
    """SIGKILL: no handler runs; the tools die with manage (PDEATHSIG)
    and the credential files had no name to leave behind."""
    conf, path, backed, changed = prepared(db_url, tmp_path)
    if engine_name != "sqlite":
        # SIGTERM first: the dump tool is ended, its file removed.
        slow = Slowed(tmp_path / "backups", DUMPERS[engine_name], "hang")
        proc = start(["db", "backup", str(tmp_path / "b1")], conf, slow.env)
        wait_for(slow.ready.exists, "the backup to start")
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out, err) == (
            143, "", "manage: error: backup interrupted by SIGTERM: no "
            "backup was written\n")
        assert not any(alive(p) for p in slow.pids())
        assert os.listdir(tmp_path / "b1") == []
        assert os.listdir(slow.tmpdir) == []
        slow.ready.unlink()
        slow.log.unlink()
        proc = start(["db", "backup", str(tmp_path / "b2")], conf, slow.env)
        wait_for(slow.ready.exists, "the backup to start")
        proc.kill()
        proc.communicate(timeout=60)
        wait_for(lambda: not any(alive(p) for p in slow.pids()),
                 "the dump tool to end", timeout=10)
        assert os.listdir(slow.tmpdir) == []
        partial, = [str(p) for p in (tmp_path / "b2").iterdir()]
        r = helpers.run(["db", "restore", partial], conf)
        assert r.code == 1 and ("has no manifest" in r.err
                                or "is empty" in r.err), r.err
        assert state(db_url) == changed

    if engine_name == "sqlite":
        slow = Slowed(tmp_path, (), "feed")
        reader = sqlite3.connect(db_url[len("sqlite:///"):])
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM users").fetchall()
    else:
        slow = Slowed(tmp_path, LOADERS[engine_name], "feed",
                      limit=os.path.getsize(path) // 2)
        reader = None
    proc = start(["db", "restore", path], conf, slow.env)
    try:
        if reader is None:
            wait_for(slow.ready.exists, "the restore to load")
        else:
            assert proc.stdout.readline().startswith("restore: safety")
            time.sleep(1.5)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if reader is not None:
            reader.close()
    wait_for(lambda: not any(alive(p) for p in slow.pids()),
             "the load tool to end", timeout=10)
    assert os.listdir(slow.tmpdir) == []
    if engine_name == "mysql":
        r = helpers.run(["db", "check"], conf)
        assert r.code == 1 and "the database is partly restored" in r.err
        assert helpers.run(["db", "restore", path], conf).code == 0
        assert state(db_url) == backed
    else:
        assert state(db_url) == changed
        assert helpers.run(["db", "check"], conf).code == 0


def test_a_load_that_fails_leaves_the_database_as_it_was_or_marked(
        db_url, tmp_path, engine_name):
    """The client tool fails part-way (a full disk, say)."""
    if engine_name == "sqlite":
        pytest.skip("SQLite's restore runs no client tool")
    # More than a pipe holds: pg_restore must not block on it.
    conf, path, backed, changed = prepared(db_url, tmp_path, more_rows=1000)
    slow = Slowed(tmp_path, LOADERS[engine_name], "fail", limit=4000)
    tool = os.path.basename(backup_tool(engine_name))
    r = helpers.run_process(["db", "restore", path], conf, env=slow.env)
    assert r.code == 1
    failed = ("manage: error: restoring failed (%s exited 1): ERROR 1114 "
              "(HY000): The table is full (simulated)" % tool)
    if engine_name == "postgresql":
        assert r.err == failed + "; nothing was restored: the database is " \
            "as it was\n"
        assert state(db_url) == changed
        assert helpers.run(["db", "check"], conf).code == 0
        return
    # MySQL: the safety backup is loaded back.
    assert r.err == failed + "; nothing was restored: the database was put " \
        "back as it was, from the safety backup %s\n" % safety_path(r.out)
    assert state(db_url) == changed
    assert helpers.run(["db", "check"], conf).code == 0
    # Without a safety backup, the database stays marked.
    slow.ready.unlink()
    r = helpers.run_process(["db", "restore", "--no-safety-backup", path],
                            conf, env=slow.env)
    assert r.code == 1
    assert r.err.startswith(failed + ". The database is partly restored: a "
                            "restore from %s started at " % path), r.err
    assert "go back" not in r.err
    assert "users" not in helpers.schema_snapshot(db_url)
    r = helpers.run(["db", "check"], conf)
    assert r.code == 1 and "the database is partly restored" in r.err
    assert helpers.run(["db", "restore", path], conf).code == 0
    assert state(db_url) == backed


def backup_tool(engine_name):
    import shutil
    return next(shutil.which(n) for n in LOADERS[engine_name]
                if shutil.which(n))


def test_restore_into_an_empty_database_takes_no_safety_backup(
        db_url, tmp_path, engine_name):
    """Copying a database into a new one (another name: told so)."""
    from tests import conftest
    conf, path, backed, changed = prepared(db_url, tmp_path)
    (tmp_path / "new").mkdir()
    url, owner = conftest.new_database(engine_name, tmp_path / "new")
    if engine_name == "sqlite":  # the name is the file's
        url = "sqlite:///%s" % (tmp_path / "new" / "other.sqlite")
    try:
        other = helpers.write_config(tmp_path / "new", url)
        r = helpers.run(["db", "restore", path], other)
        assert r.code == 1 and "is a backup of the database" in r.err
        r = helpers.run(["db", "restore", "--other-database", path], other)
        assert (r.code, r.out.splitlines()[0]) == (
            0, "restore: the database now holds the content of %s" % path), \
            r.err
        assert state(url) == backed
        assert sorted(os.listdir(tmp_path / "backups")) == [
            os.path.basename(path), os.path.basename(path) + ".manifest"]
        assert helpers.run(["db", "check"], other).code == 0
    finally:
        if owner is not None:
            owner[0].drop_database(owner[1])
