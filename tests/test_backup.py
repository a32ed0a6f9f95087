"""Backups and restores on every engine: round trip, permissions, secrets."""

import os
import re
import shutil
import stat

import pytest

from manage.database import password_of
from tests import helpers

TABLES = ("users", "projects", "user_addresses", "alembic_version",
          "manage_version")


def state(url):
    """Schema and every row of every table."""
    snap = helpers.schema_snapshot(url)
    rows = {t: sorted(helpers.query(url, "SELECT * FROM %s" % t), key=repr)
            for t in TABLES if t in snap}
    return snap, rows


def fill(url):
    helpers.query(url, "INSERT INTO users (id, display_name, email, theme, "
                       "language) VALUES (1, 'ann', 'ann@x.org', 'dark', "
                       "'en'), (2, 'bob', 'bob@y.org', NULL, NULL)")
    helpers.query(url, "INSERT INTO projects (id, owner_id, title, "
                       "visibility) VALUES (1, 1, 'p1', 'public'), "
                       "(2, 2, 'p2', 'shared')")
    helpers.query(url, "INSERT INTO user_addresses (user_id, address) "
                       "VALUES (1, '1 Elm St')")


def backup_path(out):
    match = re.search(r"backup: written to (\S+) \(restore with "
                      r"`manage db restore \1`\)", out)
    assert match, out
    return match.group(1)


def safety_path(out):
    match = re.search(r"^restore: safety backup of the database as it was: "
                      r"written to (\S+) \(restore with `manage db restore "
                      r"\1`\)$", out, re.M)
    assert match, out
    return match.group(1)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def spy_tools(tmp_path, monkeypatch):
    """Client tools wrapped to record their command line and credentials."""
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "tools.log"
    for name in ("mariadb-dump", "mysqldump", "mariadb", "mysql", "pg_dump",
                 "pg_restore"):
        real = shutil.which(name)
        if real is None:
            continue
        script = folder / name
        script.write_text(
            "#!/bin/sh\n"
            "{ echo \"argv: $0 $*\"; echo \"PGPASSWORD=${PGPASSWORD:-}\";\n"
            "  echo \"MYSQL_PWD=${MYSQL_PWD:-}\";\n"
            "  for a in \"$@\"; do case \"$a\" in --defaults-extra-file=*)\n"
            "    f=${a#--defaults-extra-file=};\n"
            "    echo \"optionfile $(stat -L -c %%a $f)\"; cat \"$f\";;\n"
            "  esac; done;\n"
            "  if [ -n \"$PGPASSFILE\" ]; then echo \"passfile $(stat -L -c"
            " %%a $PGPASSFILE)\"; cat \"$PGPASSFILE\"; fi; } >> %s\n"
            "exec %s \"$@\"\n" % (log, real))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (folder, os.environ["PATH"]))
    return log


def test_round_trip(db_url, tmp_path, spy_tools):
    conf = helpers.write_config(tmp_path, db_url)
    assert helpers.run(["db", "sync"], conf).code == 0
    fill(db_url)
    before = state(db_url)
    r = helpers.run(["db", "backup", str(tmp_path / "backups")], conf)
    assert r.code == 0, r.err
    path = backup_path(r.out)
    assert os.path.dirname(path) == str(tmp_path / "backups")
    assert mode(path) == 0o600 and mode(tmp_path / "backups") == 0o700
    assert os.path.getsize(path) > 0
    assert state(db_url) == before  # a backup changes nothing

    # Change everything: rows, and the schema too.
    helpers.query(db_url, "UPDATE users SET display_name = 'changed'")
    helpers.query(db_url, "DELETE FROM user_addresses")
    helpers.query(db_url, "INSERT INTO users (id, display_name, email) "
                          "VALUES (3, 'cy', 'cy@z.org')")
    helpers.query(db_url, "CREATE TABLE scratch (id INTEGER PRIMARY KEY)")
    assert state(db_url) != before

    r = helpers.run(["db", "restore", path], conf)
    assert r.code == 0, r.err
    safety = safety_path(r.out)
    assert r.out.splitlines()[1:] == [
        "restore: the database now holds the content of %s" % path]
    assert os.path.dirname(safety) == os.path.dirname(path)
    assert mode(safety) == 0o600 and mode(safety + ".manifest") == 0o600
    assert state(db_url) == before
    # The restored database works: the application writes, manage reads.
    helpers.query(db_url, "INSERT INTO users (id, display_name, email) "
                          "VALUES (4, 'dee', 'dee@x.org')")
    assert helpers.run(["db", "check"], conf).code == 0

    password = password_of(db_url)
    if password:  # a server engine: its client tools ran
        log = spy_tools.read_text()
        for line in log.splitlines():
            if line.startswith("argv: "):
                assert password not in line
        assert "PGPASSWORD=\n" in log and "PGPASSWORD=" + password not in log
        assert "MYSQL_PWD=" + password not in log
        # Credentials come from files with no name: /dev/fd/N.
        assert re.search(r"--defaults-extra-file=/dev/fd/\d+ |"
                         r"^passfile 600$", log, re.M), log
        assert re.search(r"^(optionfile|passfile) 600$", log, re.M), log
        assert password in log  # read from the private file by the tool
    assert password is None or password not in r.out + r.err


def test_sync_takes_a_backup_first(db_url, tmp_path):
    helpers.deploy(db_url, 2).sync()
    helpers.query(db_url, "INSERT INTO users (id, display_name, email) "
                          "VALUES (1, 'ann', 'ann@x.org')")
    before = state(db_url)
    conf = helpers.write_config(tmp_path, db_url)
    r = helpers.run(["db", "sync", "--backup", str(tmp_path / "b")], conf)
    assert r.code == 0, r.err
    target, first = r.out.splitlines()[:2]   # the database, then the backup
    assert target.startswith("database: ")
    path = backup_path(first)
    assert mode(path) == 0o600
    assert helpers.run(["db", "check"], conf).code == 0
    # The backup holds the database as it was before sync changed it.
    r = helpers.run(["db", "restore", path], conf)
    assert r.code == 0, r.err
    assert r.out.splitlines()[-1] == (
        "restore: revisions r2_contract01 (were r3_contract02); run the "
        "release that matches them, `manage db check` says what it needs")
    after = state(db_url)
    assert after[0] == before[0]
    assert {t: rows for t, rows in after[1].items() if t != "manage_version"} \
        == {t: rows for t, rows in before[1].items()
            if t != "manage_version"}
    r = helpers.run(["db", "check"], conf)
    assert r.code == 3, r.out


def test_sync_backup_of_a_database_not_created_yet(tmp_path):
    url = "sqlite:///%s" % (tmp_path / "new.sqlite")
    conf = helpers.write_config(tmp_path, url)
    r = helpers.run(["db", "sync", "--backup", str(tmp_path / "b")], conf)
    assert r.code == 0, r.err
    assert r.out.splitlines()[1] == ("backup: none taken, the database "
                                     "does not exist yet")
    assert not (tmp_path / "b").exists()


def test_restore_refuses_a_file_of_another_kind(db_url, tmp_path):
    conf = helpers.write_config(tmp_path, db_url)
    assert helpers.run(["db", "sync"], conf).code == 0
    fill(db_url)
    before = state(db_url)
    bogus = tmp_path / "bogus.dump"
    bogus.write_bytes(b"-- not a dump of anything\nDROP TABLE users;\n")
    r = helpers.run(["db", "restore", str(bogus)], conf)
    assert r.code == 1
    assert r.err.startswith("manage: error: %s is not " % bogus)
    assert r.err.rstrip().endswith("nothing was restored")
    assert state(db_url) == before
