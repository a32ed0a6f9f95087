"""Input 9 of issue 8: plain Alembic bypasses every guard.

The ``alembic`` executable of the venv is run in a child process with the
bundled ``migrations/alembic.ini`` against a release-2 database holding rows
whose ``settings``, ``address`` and ``is_public`` carry values.  The URL
reaches the environment the way manage's own configuration does
(``OS_DATABASE__CONNECTION``, read by oslo.config), since the ini file sets no
``sqlalchemy.url``.
"""

import os
import subprocess
import sys

import pytest
from alembic import command

from manage.alembic_env import PlainAlembicError
from manage.exceptions import ManageError
from manage.repository import Repository
from tests import helpers

ALEMBIC = os.path.join(os.path.dirname(sys.executable), "alembic")
INI = os.path.join(helpers.ROOT, "migrations", "alembic.ini")

COMMANDS = ("run `manage db expand`, `manage db migrate`, then, once every "
            "node runs the new code, `manage db contract` (`manage db sync` "
            "while no application runs)")
CONTRACT_REFUSED = (
    "FAILED: refused: plain Alembic may not run contract revision(s) %s: "
    "contract drops the old columns, and only manage checks first that "
    "expand is at its head and every data migration is done (rows counted "
    "live); nothing was changed; " + COMMANDS + "; `alembic upgrade "
    "expand@head` runs the expand branch alone\n")
DOWNGRADE_REFUSED = (
    "FAILED: refused: plain Alembic may not downgrade (to %s): manage does "
    "not support downgrades; nothing was changed. To go back, restore a "
    "backup with `manage db restore FILE` (taken by `manage db backup` or "
    "`manage db sync --backup`)\n")
STAMP_REFUSED = (
    "FAILED: refused: plain Alembic may not stamp a database manage "
    "upgrades (manage keeps its own version table, manage_version, in step "
    "with alembic_version, and would no longer know what is applied); "
    "nothing was changed; " + COMMANDS + "\n")

SETTINGS = '{"theme": "dark", "language": "fr"}'
USERS = [(1, "Alice", "alice@example.org", SETTINGS, "1 Main St"),
         (2, "Bob", "bob@example.org", None, None),
         (3, "Carol", "carol@example.org",
          '{"theme": "light", "language": "de"}', "3 Elm St")]
PROJECTS = [(1, 1, "public one", True), (2, 1, "private one", False),
            (3, 2, "unset one", None)]


def alembic(url, cwd, *args, ini=INI):
    """The venv's ``alembic -c INI ARGS`` in a child process."""
    env = dict(os.environ, OS_DATABASE__CONNECTION=url)
    proc = subprocess.run([ALEMBIC, "-c", ini] + list(args),
                          capture_output=True, text=True, cwd=str(cwd),
                          env=env, timeout=300)
    return helpers.Result(proc.returncode, proc.stdout, proc.stderr)


def release2_with_rows(url):
    manager = helpers.deploy(url, 2)
    manager.sync()
    manager.close()
    for row in USERS:
        helpers.query(url, "INSERT INTO users (id, display_name, email, "
                           "settings, address) VALUES (:i, :n, :e, :s, :a)",
                      i=row[0], n=row[1], e=row[2], s=row[3], a=row[4])
    for row in PROJECTS:
        helpers.query(url, "INSERT INTO projects (id, owner_id, title, "
                           "is_public) VALUES (:i, :o, :t, :p)",
                      i=row[0], o=row[1], t=row[2], p=row[3])


def old_values(url):
    users = helpers.query(url, "SELECT id, display_name, email, settings, "
                               "address FROM users ORDER BY id")
    projects = helpers.query(url, "SELECT id, owner_id, title, is_public "
                                  "FROM projects ORDER BY id")
    return users, [(i, o, t, None if p is None else bool(p))
                   for i, o, t, p in projects]


def state(url):
    """Everything a refusal must leave as it was."""
    tables = {
        "alembic_version": helpers.query(url, "SELECT * FROM alembic_version "
                                              "ORDER BY 1"),
        "manage_version": helpers.query(url, "SELECT * FROM manage_version "
                                             "ORDER BY 1, 2")}
    return helpers.schema_snapshot(url), tables, old_values(url)


@pytest.fixture
def release2(db_url):
    release2_with_rows(db_url)
    assert old_values(db_url) == (USERS, PROJECTS)
    return db_url


def test_upgrade_heads_is_refused_and_nothing_changes(release2, tmp_path):
    before = state(release2)
    r = alembic(release2, tmp_path, "upgrade", "heads")
    assert r.code == 255, r.out + r.err
    assert r.out == CONTRACT_REFUSED % "r3_contract01, r3_contract02"
    assert "Traceback" not in r.err
    assert state(release2) == before
    assert old_values(release2) == (USERS, PROJECTS)
    assert helpers.query(release2, "SELECT version_num FROM alembic_version "
                                   "ORDER BY 1") == [("r2_contract01",)]
    # a named contract revision, and one after expand: the same
    for target in ("r3_contract01", "contract@head"):
        r = alembic(release2, tmp_path, "upgrade", target)
        assert r.code == 255
        assert r.out.startswith("FAILED: refused: plain Alembic may not "
                                "run contract revision(s) r3_contract01")
    assert state(release2) == before


def test_downgrade_and_stamp_are_refused(release2, tmp_path):
    before = state(release2)
    for target in ("-1", "base", "r1_expand01"):
        r = alembic(release2, tmp_path, "downgrade", target)
        assert (r.code, r.out) == (255, DOWNGRADE_REFUSED % target), target
    for target in ("heads", "expand@head"):
        r = alembic(release2, tmp_path, "stamp", target)
        assert (r.code, r.out) == (255, STAMP_REFUSED), target
    assert state(release2) == before
    assert old_values(release2) == (USERS, PROJECTS)


def test_expand_only_upgrade_runs_as_manage_runs_it(release2, tmp_path):
    """``alembic upgrade expand@head``: triggers, journal and composite
    version as `manage db expand` leaves them; manage finishes the job."""
    r = alembic(release2, tmp_path, "upgrade", "expand@head")
    assert (r.code, r.out) == (0, ""), r.out + r.err
    assert old_values(release2) == (USERS, PROJECTS)
    assert helpers.schema_snapshot(release2)["<triggers>"], "no sync trigger"
    assert helpers.query(release2, "SELECT kind, name, revision, state FROM "
                                   "manage_version WHERE kind IN ('branch', "
                                   "'lock') ORDER BY 1, 2") == [
        ("branch", "contract", "r2_contract01", "done"),
        ("branch", "expand", "r3_expand02", "done")]
    steps = helpers.query(release2, "SELECT name, state, detail FROM "
                                    "manage_version WHERE name LIKE "
                                    "'expand:r3%' ORDER BY 1")
    assert [(n, s) for n, s, _ in steps] == [("expand:r3_expand01", "done"),
                                             ("expand:r3_expand02", "done")]
    assert all('"command": "alembic upgrade"' in d for _, _, d in steps)
    # old code writes on: the triggers carry it over
    helpers.query(release2, "UPDATE projects SET is_public = :p WHERE id = 2",
                  p=True)
    assert helpers.query(release2, "SELECT visibility FROM projects WHERE "
                                   "id = 2") == [("public",)]
    # contract still refused; manage takes over where Alembic stopped
    r = alembic(release2, tmp_path, "upgrade", "heads")
    assert (r.code, r.out) == (255, CONTRACT_REFUSED %
                               "r3_contract01, r3_contract02")
    conf = helpers.write_config(tmp_path, release2)
    r = helpers.run(["db", "version"], conf)
    assert "expand:   r3_expand02 (head r3_expand02)" in r.out
    assert helpers.run(["db", "check"], conf).code == 4
    r = helpers.run(["db", "migrate"], conf)
    assert r.code == 0, r.out + r.err
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 0, r.out + r.err
    assert helpers.run(["db", "check"], conf).code == 0
    assert helpers.query(release2, "SELECT id, theme, language FROM users "
                                   "ORDER BY id") == [
        (1, "dark", "fr"), (2, None, None), (3, "light", "de")]
    assert helpers.query(release2, "SELECT user_id, address FROM "
                                   "user_addresses ORDER BY user_id") == [
        (1, "1 Main St"), (3, "3 Elm St")]
    assert helpers.query(release2, "SELECT id, visibility FROM projects "
                                   "WHERE id < 3 ORDER BY id") == [
        (1, "public"), (2, "public")]
    assert helpers.query(release2, "SELECT count(*) FROM projects") == [(3,)]
    # at the heads, plain Alembic has nothing to run: exit 0
    r = alembic(release2, tmp_path, "upgrade", "heads")
    assert (r.code, r.out) == (0, "")


def test_expand_revision_against_the_rule_is_refused(release2, tmp_path):
    """The DDL rule guard watches plain Alembic's expand too."""
    repo = helpers.release_repository(tmp_path, 3)
    helpers.edit_revision(repo.path, "r3_expand01", "def upgrade():\n",
                          "def upgrade():\n    from alembic import op\n"
                          "    op.drop_column('users', 'address')\n")
    before = old_values(release2)
    r = alembic(release2, tmp_path, "upgrade", "expand@head",
                ini=os.path.join(repo.path, "migrations", "alembic.ini"))
    assert r.code == 255, r.out + r.err
    assert r.out.startswith(
        "FAILED: expand revision r3_expand01 drops column users.address: "
        "`ALTER TABLE users DROP COLUMN address`; expand may only add")
    assert old_values(release2) == before
    assert helpers.query(release2, "SELECT state FROM manage_version WHERE "
                                   "name = 'expand:r3_expand01'") == [
        ("failed",)]
    assert helpers.query(release2, "SELECT version_num FROM alembic_version "
                                   "ORDER BY 1") == [("r2_contract01",)]


def test_from_python_too(release2):
    """alembic.command.upgrade with the repository's config and no run
    context, by URL or with a connection handed over: refused alike."""
    before = state(release2)
    cfg = Repository().alembic_config()
    cfg.set_main_option("sqlalchemy.url", release2)
    with pytest.raises(PlainAlembicError) as caught:
        command.upgrade(cfg, "heads")
    assert isinstance(caught.value, ManageError)
    assert "FAILED: %s\n" % caught.value == CONTRACT_REFUSED % (
        "r3_contract01, r3_contract02")
    engine = helpers.database.create_engine(release2)
    try:
        with engine.connect() as conn:
            cfg = Repository().alembic_config({"connection": conn})
            with pytest.raises(PlainAlembicError):
                command.upgrade(cfg, "heads")
            with pytest.raises(PlainAlembicError):
                command.downgrade(cfg, "base")
        # expand commits each revision: not inside the caller's block
        with engine.begin() as conn:
            cfg = Repository().alembic_config({"connection": conn})
            with pytest.raises(PlainAlembicError) as caught:
                command.upgrade(cfg, "expand@head")
        assert str(caught.value).startswith(
            "refused: the connection handed to Alembic is inside a "
            "transaction block (engine.begin() or connection.begin())")
        assert state(release2) == before
        with engine.connect() as conn:
            cfg = Repository().alembic_config({"connection": conn})
            command.upgrade(cfg, "expand@head")
    finally:
        engine.dispose()
    assert helpers.query(release2, "SELECT version_num FROM alembic_version "
                                   "ORDER BY 1") == [("r2_contract01",),
                                                     ("r3_expand02",)]
    assert old_values(release2) == (USERS, PROJECTS)
    assert helpers.schema_snapshot(release2)["<triggers>"]


def test_read_only_commands_and_offline_sql_stay_allowed(sqlite_url,
                                                         tmp_path):
    release2_with_rows(sqlite_url)
    before = state(sqlite_url)
    r = alembic(sqlite_url, tmp_path, "current")
    assert r.code == 0
    assert sorted(r.out.splitlines()) == ["r2_contract01", "r2_expand01"]
    r = alembic(sqlite_url, tmp_path, "upgrade",
                "r2_contract01:contract@head", "--sql")
    assert r.code == 0, r.err
    assert "ALTER TABLE users DROP COLUMN settings" in r.out
    assert state(sqlite_url) == before


def test_a_misshapen_repository_is_refused_by_plain_alembic(sqlite_url,
                                                            tmp_path):
    release2_with_rows(sqlite_url)
    before = state(sqlite_url)
    repo = helpers.release_repository(tmp_path, 3)
    helpers.edit_revision(repo.path, "r3_expand02", "depends_on = None",
                          'depends_on = "r3_contract01"')
    r = alembic(sqlite_url, tmp_path, "upgrade", "expand@head",
                ini=os.path.join(repo.path, "migrations", "alembic.ini"))
    assert r.code == 255
    assert r.out == (
        "FAILED: revision r3_expand02 (expand/r3_expand02_settings_"
        "address.py) is an expand revision that depends on contract "
        "revision r3_contract01; an expand revision may need expand "
        "revisions only (expand runs before the new code is deployed, "
        "contract after): remove 'r3_contract01' from its depends_on\n")
    assert state(sqlite_url) == before


def test_expand_waits_for_the_run_lock_of_manage(release2, tmp_path):
    """Plain Alembic's expand takes manage's run lock: while a manage run
    holds it, the upgrade gives up (run_lock_timeout from manage's
    configuration) and changes nothing."""
    import threading
    holder = helpers.manager(release2)
    held, release = threading.Event(), threading.Event()

    def hold():
        with holder._run_lock():
            held.set()
            release.wait(60)
        holder.close()
    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(30)
        before = old_values(release2)
        env = dict(os.environ, OS_DATABASE__CONNECTION=release2,
                   OS_MIGRATION__RUN_LOCK_TIMEOUT="0.5")
        proc = subprocess.run([ALEMBIC, "-c", INI, "upgrade", "expand@head"],
                              capture_output=True, text=True,
                              cwd=str(tmp_path), env=env, timeout=300)
        assert proc.returncode == 255, proc.stdout + proc.stderr
        assert proc.stdout.startswith("FAILED: another manage run (host ")
        assert "holds the run lock of this database; gave up after " \
               "waiting 0.5s" in proc.stdout
        assert old_values(release2) == before
        assert helpers.query(release2, "SELECT version_num FROM "
                                       "alembic_version") == [
            ("r2_contract01",)]
    finally:
        release.set()
        thread.join(30)
