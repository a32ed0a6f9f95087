"""The catalogue of bad inputs (doc/bad-input.rst), one test each.

Every case must end with exactly one line on stderr, ``manage: error:
...``, the documented exit code, no traceback, the database exactly as it
was, and the connection password nowhere in stdout or stderr.  Cases that
depend on the database run on every engine, as a user with a distinctive
password; the others run once.
"""

import dataclasses
import json
import os
import re
import sys
import threading
import urllib.parse
from typing import Callable, Tuple

import pytest
from sqlalchemy.engine import make_url

from tests import conftest, helpers

SECRET = "Catalog-S3cret/7q4z"          # URL-encoded in URLs: %2F
SECRET_FORMS = (SECRET, urllib.parse.quote(SECRET, safe=""))
DOC = os.path.join(helpers.ROOT, "doc", "bad-input.rst")


@dataclasses.dataclass
class Case:
    name: str
    code: int
    message: str                 # a fragment of the one stderr line
    prepare: Callable            # (ctx) -> argv, or (argv, env) for a child
    per_engine: bool = False
    #: manage_version rows the failure may record (the journal, a failed
    #: data migration), as (kind, name) pairs.
    records: Tuple = ()


CASES = []


def case(name, code, message, **kw):
    def register(prepare):
        CASES.append(Case(name, code, message, prepare, **kw))
        return prepare
    return register


class Ctx:
    """The database of a case (release 2, with rows) and its files."""

    def __init__(self, url, tmp_path):
        self.url = url
        self.tmp = tmp_path

    def conf(self, text=None, url=None, **migration):
        if text is not None:
            path = self.tmp / "bad.conf"
            path.write_text(text)
            return str(path)
        folder = self.tmp / ("conf%d" % len(list(self.tmp.glob("conf*"))))
        folder.mkdir()
        return helpers.write_config(folder, url or self.url, **migration)

    def repo(self, edit=None):
        """A copy of the bundled repository, edited by ``edit(path)``."""
        repo = helpers.release_repository(self.tmp / "repo", 3)
        if edit:
            edit(repo.path)
        return repo.path

    def with_plugin(self, action, entry_point, code=""):
        """``manage db ACTION`` in a child process that sees a temporary
        distribution registering one plugin (``name = module:attr``) in a
        namespace of its own: returns (argv, env)."""
        namespace = "manage.test_" + entry_point.split(" = ")[0]
        folder = self.tmp / "dist"
        folder.mkdir(exist_ok=True)
        info = folder / "badplugins-0.1.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: badplugins\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(
            "[%s]\n%s\n" % (namespace, entry_point))
        (folder / "bad_plugins.py").write_text(
            "from manage.datamigration import DataMigration\n\n" + code)
        conf = self.conf(data_migration_namespace=namespace)
        return (["--config-file", conf, "db", action],
                dict(os.environ, PYTHONPATH=str(folder),
                     XDG_CACHE_HOME=str(self.tmp / "cache")))


# -- configuration -----------------------------------------------------------
@case("config-missing", 1, "configuration: Failed to find some config "
      "files: /nonexistent/manage.conf")
def _(ctx):
    return ["--config-file", "/nonexistent/manage.conf", "db", "check"]


@case("config-unreadable", 1, "configuration: cannot read ")
def _(ctx):
    folder = ctx.tmp / "a-folder.conf"
    folder.mkdir()
    return ["--config-file", str(folder), "db", "expand"]


@case("config-unparsable", 1, "configuration: Failed to parse ")
def _(ctx):
    return ["--config-file", ctx.conf("connection = x\n[database\n"),
            "db", "expand"]


@case("config-bad-value", 1, "configuration: Value for option batch_size")
def _(ctx):
    return ["--config-file", ctx.conf("[database]\nconnection = %s\n"
                                      "[migration]\nbatch_size = many\n"
                                      % ctx.url), "db", "migrate"]


@case("config-no-connection", 1, "no [database] connection in ")
def _(ctx):
    return ["--config-file", ctx.conf("[migration]\nbatch_size = 10\n"),
            "db", "sync"]


@case("config-empty-connection", 1, "no [database] connection in ")
def _(ctx):
    return ["--config-file", ctx.conf("[database]\nconnection =\n"),
            "db", "expand"]


@case("config-empty-file", 1, "no [database] connection in ")
def _(ctx):
    return ["--config-file", ctx.conf(""), "db", "migrate"]


@case("batch-min-above-max", 1, "[migration] batch_min_size (500) is "
      "larger than batch_max_size (100)", per_engine=True)
def _(ctx):
    # Refused before expand changes anything (it used to apply expand).
    return ["--config-file", ctx.conf(batch_min_size=500,
                                      batch_max_size=100), "db", "sync"]


# -- connection URLs ---------------------------------------------------------
def _url_case(name, url, message, action="expand"):
    """A case whose input is the URL; {pw} stands for the password."""
    url = url.format(pw=SECRET_FORMS[1])

    @case(name, 1, message)
    def _(ctx):
        return ["--config-file", ctx.conf(url=url), "db", action]


_url_case("url-unknown-dialect", "informix://u:{pw}@db.example/x",
          "manage does not support the informix database")
_url_case("url-unknown-driver", "mysql+nodriver://u:{pw}@db.example/x",
          "connection names an unknown database or driver 'mysql+nodriver'")
_url_case("url-driver-not-installed", "mysql+mysqldb://u:{pw}@db.example/x",
          "the driver for 'mysql+mysqldb' is not installed")
_url_case("url-malformed", "://u:{pw}@nowhere",
          "[database] connection is not a valid database URL")
_url_case("url-bad-port", "mysql+pymysql://u:{pw}@127.0.0.1:port/x",
          "[database] connection is not a valid database URL")
_url_case("server-unreachable-mysql", "mysql+pymysql://u:{pw}@127.0.0.1:1/x",
          "Can't connect to MySQL server on '127.0.0.1'", "check")
_url_case("server-unreachable-postgresql",
          "postgresql://u:{pw}@127.0.0.1:1/x",
          "port 1 failed: Connection refused", "check")
_url_case("sqlite-path-question-mark", "sqlite:////tmp/app?v2.sqlite",
          "the SQLite path in [database] connection contains '?': what "
          "follows it (v2.sqlite) is read as driver options, so /tmp/app "
          "would be opened instead; write ? in a file name as %3F")
_url_case("sqlite-folder-missing", "sqlite:////nonexistent/folder/db.sqlite",
          "the folder of the SQLite database /nonexistent/folder/db.sqlite "
          "does not exist")


@case("sqlite-not-a-database", 1, "file is not a database")
def _(ctx):
    path = ctx.tmp / "notes.txt"
    path.write_text("these are my notes, not a database\n")
    return ["--config-file", ctx.conf(url="sqlite:///%s" % path), "db",
            "expand"]


def _server_url(ctx, **change):
    url = make_url(ctx.url)
    if url.get_backend_name() == "sqlite":
        pytest.skip("SQLite has no server, user or password")
    return url.set(**change).render_as_string(hide_password=False)


@case("wrong-password", 1, "failed on ", per_engine=True)
def _(ctx):
    return ["--config-file", ctx.conf(url=_server_url(
        ctx, password=SECRET + "-wrong")), "db", "expand"]


@case("database-missing", 1, "failed on ", per_engine=True)
def _(ctx):
    return ["--config-file", ctx.conf(url=_server_url(
        ctx, database="no_such_database")), "db", "expand"]


# -- the database's state ----------------------------------------------------
@case("unknown-revision", 1, "the database is at revision r9_contract07, "
      "which this code does not know", per_engine=True)
def _(ctx):
    helpers.query(ctx.url, "UPDATE alembic_version SET version_num = "
                           "'r9_contract07'")
    return ["--config-file", ctx.conf(), "db", "expand"]


@case("foreign-database", 1, "the database holds tables (invoices) but no "
      "version recorded by manage", per_engine=True)
def _(ctx):
    for table in ("alembic_version", "manage_version", "projects", "users"):
        helpers.query(ctx.url, "DROP TABLE %s" % table)
    helpers.query(ctx.url, "CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    return ["--config-file", ctx.conf(), "db", "sync"]


@case("migrate-before-expand", 1, "run `manage db expand` first",
      per_engine=True)
def _(ctx):
    return ["--config-file", ctx.conf(), "db", "migrate"]


@case("contract-before-expand", 1, "contract refused: the expand branch is "
      "at r2_expand01, not at its head r3_expand02; run `manage db expand` "
      "first", per_engine=True)
def _(ctx):
    return ["--config-file", ctx.conf(), "db", "contract"]


@case("contract-before-migrate", 1, "contract refused: 3 data migration(s) "
      "not done", per_engine=True)
def _(ctx):
    assert helpers.run(["db", "expand"], ctx.conf()).code == 0
    return ["--config-file", ctx.conf(), "db", "contract"]


@case("lock-held", 7, "holds the run lock of this database; gave up after "
      "waiting 0.5s", per_engine=True)
def _(ctx):
    holder = helpers.manager(ctx.url)
    held, ctx.release = threading.Event(), threading.Event()

    def hold():
        with holder._run_lock():
            held.set()
            ctx.release.wait(60)
        holder.close()
    ctx.holder = threading.Thread(target=hold)
    ctx.holder.start()
    assert held.wait(30)
    return ["--config-file", ctx.conf(run_lock_timeout=0.5), "db", "expand"]


# -- plugins -----------------------------------------------------------------
RAISES = '''
class Raises(DataMigration):
    name = "raises"
    def pending(self, connection):
        return 1
    def migrate(self, connection, limit):
        raise ValueError("row 7 holds malformed JSON")
'''


@case("data-migration-raises", 6, "1 data migration(s) failed: raises: "
      "ValueError: row 7 holds malformed JSON", per_engine=True,
      records=(("data", "raises"), ("step", "migrate:raises")))
def _(ctx):
    # Release 3 expanded first, so that migrate may run.
    assert helpers.run(["db", "expand"], ctx.conf()).code == 0
    return ctx.with_plugin("migrate", "raises = bad_plugins:Raises", RAISES)


LIAR = '''
class Liar(DataMigration):
    name = "liar"
    def pending(self, connection):
        return 5
    def migrate(self, connection, limit):
        return limit            # says it moved rows; moves none
'''


@case("plugin-reports-rows-it-does-not-move", 6, "1 data migration(s) "
      "failed: liar: reported 1000 rows moved while 5 were pending, and 5 "
      "still are: its migrate() reports rows it does not move",
      per_engine=True, records=(("data", "liar"), ("step", "migrate:liar")))
def _(ctx):
    # It used to run for ever.
    assert helpers.run(["db", "expand"], ctx.conf()).code == 0
    return ctx.with_plugin("migrate", "liar = bad_plugins:Liar", LIAR)


@case("plugin-registered-twice", 1, "data migration 'twice' is registered "
      "twice in the entry-point namespace manage.test_twice "
      "(bad_plugins:One and bad_plugins:Two); remove one")
def _(ctx):
    return ctx.with_plugin("version", "twice = bad_plugins:One\n"
                           "twice = bad_plugins:Two",
                           "class One(DataMigration):\n"
                           "    def pending(self, c): return 0\n"
                           "    def migrate(self, c, n): return 0\n\n"
                           "class Two(One):\n    pass\n")


@case("data-migrations-named-twice", 1, "[migration] data_migrations names "
      "users_display_name more than once")
def _(ctx):
    return ["--config-file", ctx.conf(
        data_migrations="users_display_name,users_email_domain,"
        "users_display_name"), "db", "migrate"]


@case("throttle-query-fails", 1, "[migration] throttle_query failed: ",
      per_engine=True)
def _(ctx):
    # The option is named once; no migration is marked failed for it.
    assert helpers.run(["db", "expand"], ctx.conf()).code == 0
    return ["--config-file", ctx.conf(
        throttle_query="SELECT no_such_column FROM users"), "db", "migrate"]


@case("config-misspelt-option", 1, "unknown option batch_sise in "
      "[migration] of ")
def _(ctx):
    return ["--config-file", ctx.conf(batch_sise=10), "db", "migrate"]


@case("plugin-not-importable", 1, "data migration plugin 'broken' "
      "(no_such_module:Thing) cannot be loaded: ModuleNotFoundError")
def _(ctx):
    return ctx.with_plugin("version", "broken = no_such_module:Thing")


@case("plugin-raises-on-load", 1, "data migration plugin 'angry' "
      "(bad_plugins:Angry) cannot be loaded: RuntimeError: no config")
def _(ctx):
    return ctx.with_plugin("migrate", "angry = bad_plugins:Angry",
                           "class Angry:\n    def __init__(self):\n"
                           "        raise RuntimeError('no config')\n")


@case("plugin-wrong-class", 1, "data migration plugin 'plain' "
      "(bad_plugins:Plain) is not a manage.datamigration.DataMigration")
def _(ctx):
    return ctx.with_plugin("check", "plain = bad_plugins:Plain",
                           "class Plain:\n    pass\n")


@case("plugin-named-but-missing", 1, "data migration(s) no_such_migration "
      "named in [migration] data_migrations are not registered")
def _(ctx):
    return ["--config-file", ctx.conf(data_migrations="no_such_migration"),
            "db", "migrate"]


# -- the migration repository ------------------------------------------------
@case("repository-missing", 1, "the migration repository /nonexistent/repo "
      "has no migrations/ folder")
def _(ctx):
    return ["--config-file", ctx.conf(repository="/nonexistent/repo"), "db",
            "expand"]


@case("repository-two-heads", 1, "the expand branch has 2 heads "
      "(r3_expand01, r3_expand02)")
def _(ctx):
    repo = ctx.repo(lambda p: helpers.edit_revision(
        p, "r3_expand02", 'down_revision = "r3_expand01"',
        'down_revision = "r2_expand01"'))
    return ["--config-file", ctx.conf(repository=repo), "db", "expand"]


@case("revision-syntax-error", 1, "r3_expand01_visibility.py does not parse:"
      " expected ':' (line 16)")
def _(ctx):
    repo = ctx.repo(lambda p: helpers.edit_revision(
        p, "r3_expand01", "def upgrade():", "def upgrade()"))
    return ["--config-file", ctx.conf(repository=repo), "db", "check"]


@case("revision-import-error", 1, "cannot be loaded: cannot import name "
      "'no_such_plugin' from 'data_migrations'")
def _(ctx):
    repo = ctx.repo(lambda p: helpers.edit_revision(
        p, "r3_expand01", "from data_migrations import projects_visibility",
        "from data_migrations import no_such_plugin"))
    return ["--config-file", ctx.conf(repository=repo), "db", "version"]


@case("expand-drops-a-column", 1, "expand revision r3_expand01 drops column "
      "users.address", per_engine=True,
      records=(("step", "expand:r3_expand01"),))
def _(ctx):
    repo = ctx.repo(lambda p: helpers.edit_revision(
        p, "r3_expand01", "def upgrade():\n",
        "def upgrade():\n    from alembic import op\n"
        "    op.drop_column('users', 'address')\n"))
    return ["--config-file", ctx.conf(repository=repo), "db", "expand"]


@case("expand-depends-on-contract", 1, "revision r3_expand02 (expand/"
      "r3_expand02_settings_address.py) is an expand revision that depends "
      "on contract revision r3_contract01")
def _(ctx):
    repo = ctx.repo(lambda p: helpers.edit_revision(
        p, "r3_expand02", "depends_on = None", 'depends_on = "r3_contract01"'))
    return ["--config-file", ctx.conf(repository=repo), "db", "expand"]


@case("contract-without-depends-on", 1, "revision r3_contract01 (contract/"
      "r3_contract01_drop_is_public.py) is a contract revision that depends "
      "on no expand revision")
def _(ctx):
    repo = ctx.repo(lambda p: helpers.edit_revision(
        p, "r3_contract01", 'depends_on = "r3_expand01"', "depends_on = None"))
    return ["--config-file", ctx.conf(repository=repo), "db", "contract"]


# -- backups -----------------------------------------------------------------
@case("restore-file-missing", 1, "backup file /nonexistent/b.sqlite does not "
      "exist", per_engine=True)
def _(ctx):
    return ["--config-file", ctx.conf(), "db", "restore",
            "/nonexistent/b.sqlite"]


@case("restore-not-a-backup", 1, "nothing was restored", per_engine=True)
def _(ctx):
    path = ctx.tmp / "notes.sql"
    path.write_text("DROP TABLE users;\n")
    return ["--config-file", ctx.conf(), "db", "restore", str(path)]


def _backup(ctx):
    """A backup of the case's database (its path)."""
    r = helpers.run(["--config-file", ctx.conf(), "db", "backup",
                     str(ctx.tmp / "backups")])
    assert r.code == 0, r.err
    return re.search(r"written to (\S+) ", r.out).group(1)


def _edit_manifest(path, **values):
    with open(path + ".manifest") as f:
        data = json.load(f)
    with open(path + ".manifest", "w") as f:
        json.dump(dict(data, **values), f)


@case("restore-empty-file", 1, "is empty; nothing was restored",
      per_engine=True)
def _(ctx):
    path = ctx.tmp / "empty.backup"
    path.write_bytes(b"")
    return ["--config-file", ctx.conf(), "db", "restore", str(path)]


@case("restore-a-folder", 1, "is not a file; nothing was restored")
def _(ctx):
    return ["--config-file", ctx.conf(), "db", "restore", str(ctx.tmp)]


@case("restore-damaged-backup", 1, "is damaged or incomplete (",
      per_engine=True)
def _(ctx):
    path = _backup(ctx)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) * 6 // 10)
    return ["--config-file", ctx.conf(), "db", "restore", path]


@case("restore-damaged-without-manifest", 1, "is damaged or incomplete (",
      per_engine=True)
def _(ctx):
    path = _backup(ctx)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) * 6 // 10)
    return ["--config-file", ctx.conf(), "db", "restore",
            "--without-manifest", path]


@case("restore-without-manifest", 1, "has no manifest", per_engine=True)
def _(ctx):
    path = _backup(ctx)
    os.unlink(path + ".manifest")
    return ["--config-file", ctx.conf(), "db", "restore", path]


@case("restore-manifest-unreadable", 1, ".manifest of backup ",
      per_engine=True)
def _(ctx):
    path = _backup(ctx)
    with open(path + ".manifest", "w") as f:
        f.write("{not json")
    return ["--config-file", ctx.conf(), "db", "restore", path]


@case("restore-other-database", 1, "is a backup of the database elsewhere",
      per_engine=True)
def _(ctx):
    path = _backup(ctx)
    _edit_manifest(path, database="elsewhere")
    return ["--config-file", ctx.conf(), "db", "restore", path]


@case("restore-unknown-revision", 1, "holds revision r9_expand01, which "
      "this code does not know", per_engine=True)
def _(ctx):
    path = _backup(ctx)
    _edit_manifest(path, revisions=["r9_expand01"])
    return ["--config-file", ctx.conf(), "db", "restore", path]


@case("restore-lock-held", 7, "holds the run lock of this database; gave up "
      "after waiting 0.5s", per_engine=True)
def _(ctx):
    path = _backup(ctx)
    holder = helpers.manager(ctx.url)
    held, ctx.release = threading.Event(), threading.Event()

    def hold():
        with holder._run_lock():
            held.set()
            ctx.release.wait(60)
        holder.close()
    ctx.holder = threading.Thread(target=hold)
    ctx.holder.start()
    assert held.wait(30)
    return ["--config-file", ctx.conf(run_lock_timeout=0.5), "db", "restore",
            path]


@case("restore-safety-folder-is-a-file", 1, "is not a folder")
def _(ctx):
    path = _backup(ctx)
    folder = ctx.tmp / "a-file"
    folder.write_text("x")
    return ["--config-file", ctx.conf(), "db", "restore",
            "--safety-backup-dir", str(folder), path]


@case("backup-folder-is-a-file", 1, "is not a folder")
def _(ctx):
    path = ctx.tmp / "a-file"
    path.write_text("x")
    return ["--config-file", ctx.conf(), "db", "backup", str(path)]


# -- the test ----------------------------------------------------------------
def _params():
    for c in CASES:
        for engine in (conftest.ENGINES if c.per_engine else ("sqlite",)):
            yield pytest.param(c, engine, id="%s-%s" % (c.name, engine))


def secret_database(engine, tmp_path):
    """A fresh database owned by a user whose password is SECRET."""
    url, owner = conftest.new_database(engine, tmp_path)
    if owner is None:
        return url, owner
    server, name = owner
    if engine == "mysql":
        server.admin_execute("CREATE USER IF NOT EXISTS 'catalog'@'%%' "
                             "IDENTIFIED BY '%s'" % SECRET)
        server.admin_execute("GRANT ALL ON `%s`.* TO 'catalog'@'%%'" %
                             re.sub(r"([_%\\])", r"\\\1", name))
    else:
        server.admin_execute(
            "DO $$BEGIN CREATE ROLE catalog LOGIN PASSWORD '%s'; EXCEPTION "
            "WHEN duplicate_object THEN NULL; END$$" % SECRET)
        server.admin_execute('ALTER DATABASE "%s" OWNER TO catalog' % name)
    url = make_url(url).set(username="catalog", password=SECRET)
    return url.render_as_string(hide_password=False), owner


def state(url, records=()):
    """Schema and rows of every table, but the records a case may write."""
    try:
        snap = helpers.schema_snapshot(url)
    except Exception as exc:  # a URL that cannot connect: nothing to see
        return type(exc).__name__
    rows = {}
    for table in snap:
        if table.startswith("<"):
            continue
        found = helpers.query(url, "SELECT * FROM %s" % table)
        if table == "manage_version":
            found = [r for r in found if (r[0], r[1]) not in records]
        rows[table] = sorted(found, key=repr)
    return snap, rows


@pytest.mark.parametrize("bad, engine", list(_params()))
def test_bad_input(bad, engine, tmp_path):
    tmp_path.joinpath("db").mkdir()
    url, owner = secret_database(engine, tmp_path / "db")
    ctx = Ctx(url, tmp_path)
    ctx.holder = None
    try:
        helpers.deploy(url, 2).sync()
        helpers.query(url, "INSERT INTO users (id, display_name, email, "
                           "address) VALUES (1, 'ann', 'ann@x.org', 'Elm')")
        prepared = bad.prepare(ctx)
        before = state(url, bad.records)
        if isinstance(prepared, tuple):
            argv, env = prepared
            r = helpers.run_process(argv, env=env, cwd=str(tmp_path))
        else:
            r = helpers.run(prepared)
        assert r.code == bad.code, (r.out, r.err)
        lines = r.err.splitlines()
        assert len(lines) == 1, r.err
        assert lines[0].startswith("manage: error: "), r.err
        assert bad.message in lines[0], r.err
        assert "Traceback" not in r.out + r.err
        for secret in SECRET_FORMS:
            assert secret not in r.out + r.err
        assert state(url, bad.records) == before
    finally:
        if ctx.holder is not None:
            ctx.release.set()
            ctx.holder.join(30)
        if owner:
            owner[0].drop_database(owner[1])


def test_a_failing_pending_count_is_shown_not_raised(tmp_path):
    """A plugin whose pending() raises: version shows ? and the failure,
    check keeps its code, migrate fails that migration by name."""
    url = "sqlite:///%s" % (tmp_path / "db.sqlite")
    helpers.deploy(url, 2).sync()
    ctx = Ctx(url, tmp_path)
    assert helpers.run(["db", "expand"], ctx.conf()).code == 0
    code = ("class Broken(DataMigration):\n"
            "    def pending(self, connection):\n"
            "        return {}['settings']\n"
            "    def migrate(self, connection, limit):\n"
            "        return 0\n")
    argv, env = ctx.with_plugin("version", "broken = bad_plugins:Broken",
                                code)
    r = helpers.run_process(argv, env=env)
    assert r.code == 0, r.err
    assert ("  broken                       pending  0 rows done, ? "
            "remaining (counting its pending rows failed: KeyError: "
            "'settings')\n") in r.out
    r = helpers.run_process(argv[:-1] + ["check"], env=env)
    assert (r.code, r.err) == (4, "")
    r = helpers.run_process(argv[:-1] + ["migrate"], env=env)
    assert r.code == 6
    assert r.err == ("manage: error: 1 data migration(s) failed: broken: "
                     "KeyError: 'settings'\n")


def test_catalogue_is_documented():
    with open(DOC) as f:
        doc = f.read()
    assert len(CASES) >= 25
    for c in CASES:
        assert "``%s``" % c.name in doc, c.name
        # The row's last cell is the exit code the case asserts.
        row = doc.split("* - ``%s``" % c.name, 1)[1].split("* - ", 1)[0]
        cells = re.split(r"\n\s+- ", row.strip())
        assert cells[-1].split()[0] == str(c.code), (c.name, cells[-1])


def test_debug_shows_the_traceback(tmp_path):
    conf = helpers.write_config(tmp_path, "sqlite:////nonexistent/x/db")
    r = helpers.run(["--debug", "db", "expand"], conf)
    assert r.code == 1
    assert "Traceback (most recent call last)" in r.err
    assert r.err.rstrip().splitlines()[-1].startswith("manage: error: ")


def test_every_command_hides_the_password(tmp_path, engine_name):
    """Each command's output, on success too, never shows the password."""
    (tmp_path / "db").mkdir()
    url, owner = secret_database(engine_name, tmp_path / "db")
    try:
        conf = helpers.write_config(tmp_path, url)
        outputs = []
        debug = ["--debug", "db"]   # tracebacks and debug logging too
        for argv, code in ((["db", "check"], 3), (["db", "version"], 0),
                           (["db", "version", "--format", "json"], 0),
                           (debug + ["expand"], 0), (debug + ["migrate"], 0),
                           (debug + ["contract"], 0), (debug + ["sync"], 0),
                           (debug + ["lint", "--dialect", "sqlite"], 0),
                           (debug + ["backup", str(tmp_path / "b")], 0),
                           (debug + ["check"], 0)):
            r = helpers.run(argv, conf)
            assert r.code == code, (argv, r.err)
            outputs.append(r.out + r.err)
        path = re.search(r"written to (\S+)", outputs[-2]).group(1)
        r = helpers.run(["--debug", "db", "restore", path], conf)
        assert r.code == 0, r.err
        outputs.append(r.out + r.err)
        for secret in SECRET_FORMS:
            assert not [o for o in outputs if secret in o]
    finally:
        if owner:
            owner[0].drop_database(owner[1])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
