"""Expand only adds, contract only removes: the guard on emitted DDL."""

import pytest

from manage.ddl_guard import classify
from tests import helpers


@pytest.mark.parametrize("sql, expected", [
    ("CREATE TABLE t (id INTEGER NOT NULL, a TEXT, PRIMARY KEY (id))",
     [("create", "TABLE", "t", "t")]),
    ("CREATE UNIQUE INDEX ix ON t (a)", [("create", "INDEX", "ix", "t")]),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix ON s.t (a)",
     [("create", "INDEX", "ix", "t")]),
    ("ALTER TABLE `t` ADD COLUMN a INT", [("add", "COLUMN", "a", "t")]),
    ("ALTER TABLE t ADD a INT, DROP b", [("add", "COLUMN", "a", "t"),
                                         ("drop", "COLUMN", "b", "t")]),
    ('ALTER TABLE "t" DROP COLUMN "a"', [("drop", "COLUMN", "a", "t")]),
    ("ALTER TABLE t ADD CONSTRAINT uq UNIQUE (a)",
     [("add", "CONSTRAINT", "uq", "t")]),
    ("ALTER TABLE t DROP FOREIGN KEY fk_1",
     [("drop", "FOREIGN KEY", "fk_1", "t")]),
    ("ALTER TABLE t DROP PRIMARY KEY", [("drop", "PRIMARY KEY", None, "t")]),
    ("ALTER TABLE t RENAME COLUMN a TO b", [("rename", "COLUMN", "a", "t")]),
    ("ALTER TABLE t RENAME TO u", [("rename", "TABLE", "t", "t")]),
    ("RENAME TABLE a TO b, c TO d", [("rename", "TABLE", "a", "a"),
                                     ("rename", "TABLE", "c", "c")]),
    ("ALTER TABLE t CHANGE a b INT", [("rename", "COLUMN", "a", "t")]),
    ("ALTER TABLE t CHANGE COLUMN a a BIGINT", []),
    ("ALTER TABLE t ALTER COLUMN a DROP NOT NULL", []),
    ("ALTER TABLE t MODIFY a INT NULL", []),
    ("DROP TABLE IF EXISTS a, b", [("drop", "TABLE", "a", "a"),
                                   ("drop", "TABLE", "b", "b")]),
    ("DROP INDEX ix ON t", [("drop", "INDEX", "ix", "t")]),
    ("DROP TRIGGER IF EXISTS \"msync_x_trg\" ON \"users\"",
     [("drop", "TRIGGER", "msync_x_trg", "users")]),
    ("DROP FUNCTION IF EXISTS msync_x_fn()",
     [("drop", "FUNCTION", "msync_x_fn", None)]),
    ("CREATE OR REPLACE FUNCTION msync_x_fn() RETURNS trigger AS $$ "
     "BEGIN DROP TABLE t; END $$", [("create", "FUNCTION", "msync_x_fn",
                                     None)]),
    ("CREATE DEFINER=`a`@`%` TRIGGER x BEFORE INSERT ON t FOR EACH ROW "
     "SET NEW.a = 1", [("create", "TRIGGER", "x", "t")]),
    ("TRUNCATE TABLE t", [("drop", "ROWS", "t", "t")]),
    ("ALTER INDEX ix RENAME TO iy", [("rename", "INDEX", "ix", None)]),
    ("-- a comment\n/* another */ DROP VIEW v", [("drop", "VIEW", "v", None)]),
    ("UPDATE t SET a = 'DROP TABLE x'", []),
    ("INSERT INTO t (a) VALUES ('ALTER TABLE t DROP a')", []),
    ("SELECT 1", []),
])
def test_classify(sql, expected):
    assert [(c.action, c.what, c.name, c.table)
            for c in classify(sql)] == expected


# -- on a live database ------------------------------------------------------
def _copy(tmp_path, edits):
    """The bundled repository (release 3) with revision files edited."""
    repo = helpers.release_repository(tmp_path, 3)
    for prefix, (old, new) in edits.items():
        helpers.edit_revision(repo.path, prefix, old, new)
    return repo


EXPAND_FIRST = "def upgrade():\n"


def _state(url):
    rows = {t: helpers.query(url, "SELECT * FROM %s ORDER BY 1" % t)
            for t in ("users", "projects", "alembic_version")}
    return helpers.schema_snapshot(url), rows


@pytest.mark.parametrize("statement, message", [
    ('    op.drop_column("users", "address")\n',
     "expand revision r3_expand01 drops column users.address: `ALTER TABLE"),
    ('    op.execute("ALTER TABLE users RENAME COLUMN email TO mail")\n',
     "expand revision r3_expand01 renames column users.email: `ALTER TABLE "
     "users RENAME COLUMN email TO mail`; expand may only add"),
    ('    with op.batch_alter_table("users") as batch:\n'
     '        batch.drop_column("address")\n',
     "expand revision r3_expand01 drops column users.address"),
    ('    op.execute("DROP TABLE projects")\n',
     "expand revision r3_expand01 drops table projects"),
])
def test_expand_refuses_drop_and_rename(db_url, tmp_path, statement,
                                        message):
    helpers.deploy(db_url, 2).sync()
    helpers.query(db_url, "INSERT INTO users (id, display_name, email, "
                          "address) VALUES (1, 'a', 'a@b.c', 'x')")
    repo = _copy(tmp_path, {"r3_expand01": (
        EXPAND_FIRST, EXPAND_FIRST + "    from alembic import op\n"
        + statement)})
    conf = helpers.write_config(tmp_path, db_url, repository=repo.path)
    before = _state(db_url)
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 1
    assert r.err.startswith("manage: error: " + message), r.err
    assert "move it to a contract revision, or state why it is safe with " \
           "ddl_rule_exception = \"...\" in the revision file" in r.err
    assert _state(db_url) == before
    r = helpers.run(["db", "check"], conf)
    assert r.code == 3 and r.out.startswith(
        "expand revision r3_expand01 failed: expand revision r3_expand01 ")


def test_contract_refuses_create_and_add(db_url, tmp_path):
    helpers.deploy(db_url, 2).sync()
    for statement, message in (
            ('    op.create_index("ix_title", "projects", ["title"])\n',
             "contract revision r3_contract01 creates index "
             "projects.ix_title"),
            ('    op.add_column("projects", sa.Column("x", sa.Integer))\n',
             "contract revision r3_contract01 adds column projects.x"),
            ('    op.create_table("t", sa.Column("id", sa.Integer, '
             'primary_key=True))\n',
             "contract revision r3_contract01 creates table t")):
        folder = tmp_path / str(abs(hash(statement)))
        folder.mkdir()
        repo = _copy(folder, {"r3_contract01": (
            "def upgrade():\n", "def upgrade():\n    from alembic import op\n"
            "    import sqlalchemy as sa\n" + statement)})
        conf = helpers.write_config(folder, db_url, repository=repo.path)
        assert helpers.run(["db", "expand"], conf).code == 0
        assert helpers.run(["db", "migrate"], conf).code == 0
        before = _state(db_url)
        r = helpers.run(["db", "contract"], conf)
        assert r.code == 1
        assert r.err.startswith("manage: error: " + message), r.err
        assert "contract may only remove" in r.err
        assert _state(db_url) == before


def test_batch_rebuild_in_contract_is_allowed(db_url, tmp_path):
    """Alembic's batch mode rebuilds a table (copy, drop, rename): judged by
    what the copy keeps, it only removes a column."""
    if db_url.startswith("mysql"):
        pytest.skip("Alembic cannot rebuild a table with a named foreign "
                    "key on MySQL (duplicate constraint name)")
    repo = _copy(tmp_path, {"r3_contract01": (
        '    drop_column("projects", "is_public")\n',
        '    from alembic import op\n'
        '    with op.batch_alter_table("projects", recreate="always") as b:\n'
        '        b.drop_column("is_public")\n')})
    conf = helpers.write_config(tmp_path, db_url, repository=repo.path)
    for action in ("expand", "migrate", "contract"):
        r = helpers.run(["db", action], conf)
        assert r.code == 0, (action, r.err)
    cols = helpers.schema_snapshot(db_url)["projects"]["columns"]
    assert [c[0] for c in cols] == ["id", "owner_id", "title", "visibility"]


def test_batch_rebuild_that_adds_in_contract_is_refused(sqlite_url,
                                                        tmp_path):
    repo = _copy(tmp_path, {"r3_contract01": (
        '    drop_column("projects", "is_public")\n',
        '    from alembic import op\n    import sqlalchemy as sa\n'
        '    with op.batch_alter_table("projects", recreate="always") as b:\n'
        '        b.add_column(sa.Column("extra", sa.Integer))\n')})
    conf = helpers.write_config(tmp_path, sqlite_url, repository=repo.path)
    for action in ("expand", "migrate"):
        assert helpers.run(["db", action], conf).code == 0
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 1
    assert "contract revision r3_contract01 adds column projects.extra" \
        in r.err


def test_stated_exception_allows_and_missing_reason_refuses(db_url,
                                                            tmp_path):
    helpers.deploy(db_url, 2).sync()
    drop = (EXPAND_FIRST, EXPAND_FIRST + "    from alembic import op\n"
            '    op.execute("DROP TABLE IF EXISTS legacy_cache")\n')
    repo = _copy(tmp_path / "a", {"r3_expand01": drop})
    helpers.edit_revision(repo.path, "r3_expand01", "depends_on = None\n",
                          'depends_on = None\nddl_rule_exception = ""\n')
    conf = helpers.write_config(tmp_path / "a", db_url, repository=repo.path)
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 1
    assert "revision r3_expand01 sets ddl_rule_exception without a reason" \
        in r.err
    helpers.edit_revision(
        repo.path, "r3_expand01", 'ddl_rule_exception = ""',
        'ddl_rule_exception = ("legacy_cache was never read by any release; '
        'dropping it cannot break old code")')
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 0, r.err
    assert helpers.run(["db", "check"], conf).code == 4


def test_sync_triggers_pass_and_offline_sync_is_guarded_too(db_url,
                                                           tmp_path):
    """The bundled revisions (sync triggers included) pass the guard; the
    offline `sync` is guarded like the online phases."""
    conf = helpers.write_config(tmp_path, db_url)
    assert helpers.run(["db", "expand"], conf).code == 0
    assert helpers.schema_snapshot(db_url)["<triggers>"]
    repo = _copy(tmp_path, {"r1_expand01": (
        EXPAND_FIRST, EXPAND_FIRST + "    from alembic import op\n"
        '    op.execute("CREATE TABLE scratch (id INTEGER)")\n'
        '    op.execute("DROP TABLE scratch")\n')})
    other, owner = None, None
    from tests.conftest import new_database
    (tmp_path / "b").mkdir()
    other, owner = new_database(db_url.split(":")[0].split("+")[0],
                                tmp_path / "b")
    try:
        conf = helpers.write_config(tmp_path / "b", other,
                                    repository=repo.path)
        r = helpers.run(["db", "sync"], conf)
        assert r.code == 1
        assert "expand revision r1_expand01 drops table scratch" in r.err
    finally:
        if owner:
            owner[0].drop_database(owner[1])
