"""`manage db lint`: the rule checked offline, without a database."""

from tests import helpers
from tests.test_ddl_guard import EXPAND_FIRST, _copy

UNREACHABLE = "mysql+pymysql://app:Lint-Secret-9@127.0.0.1:1/nowhere"


def lint(tmp_path, repo=None, *args, url=UNREACHABLE):
    extra = {"repository": repo.path} if repo is not None else {}
    conf = helpers.write_config(tmp_path, url, **extra)
    return helpers.run(["db", "lint"] + list(args), conf)


def test_bundled_repository_passes_without_a_database(tmp_path):
    r = lint(tmp_path)
    assert r.code == 0, r.out + r.err
    assert r.out == ("lint: ok; checked 8 revisions on mysql, 8 revisions on "
                     "postgresql, 8 revisions on sqlite\n")
    assert r.err == ""
    path = tmp_path / "never.sqlite"
    r = lint(tmp_path, None, "--dialect", "sqlite", url="sqlite:///%s" % path)
    assert (r.code, r.out) == (0, "lint: ok; checked 8 revisions on "
                                  "sqlite\n")
    assert not path.exists()


def test_violations_in_both_branches_exit_1(tmp_path):
    repo = _copy(tmp_path, {
        "r2_expand01": (EXPAND_FIRST, EXPAND_FIRST +
                        "    from alembic import op\n"
                        "    op.execute('ALTER TABLE users DROP COLUMN "
                        "address')\n"),
        "r3_contract01": ("def upgrade():\n", "def upgrade():\n"
                          "    from alembic import op\n"
                          "    op.create_index('ix_t', 'projects', "
                          "['title'])\n")})
    r = lint(tmp_path, repo)
    assert r.code == 1
    lines = r.out.splitlines()
    assert lines[-1].startswith("lint: 6 problem(s); checked 8 revisions")
    for dialect in ("mysql", "postgresql", "sqlite"):
        assert any(line.startswith(
            "r2_expand01, %s: expand revision r2_expand01 drops column "
            "users.address: `ALTER TABLE users DROP COLUMN address`"
            % dialect) for line in lines)
        assert any(line.startswith(
            "r3_contract01, %s: contract revision r3_contract01 creates "
            "index projects.ix_t" % dialect) for line in lines)
    r = lint(tmp_path, repo, "--dialect", "postgresql")
    assert r.code == 1
    assert r.out.splitlines()[-1] == (
        "lint: 2 problem(s); checked 8 revisions on postgresql")


def test_exception_needs_a_reason(tmp_path):
    repo = _copy(tmp_path, {"r2_expand01": (
        EXPAND_FIRST, EXPAND_FIRST + "    from alembic import op\n"
        "    op.execute('DROP TABLE IF EXISTS legacy')\n")})
    helpers.edit_revision(repo.path, "r2_expand01", "depends_on = None\n",
                          "depends_on = None\nddl_rule_exception = 'ok'\n")
    r = lint(tmp_path, repo, "--dialect", "sqlite")
    assert r.code == 1
    assert "r2_expand01: revision r2_expand01 sets ddl_rule_exception " \
           "without a reason" in r.out
    helpers.edit_revision(repo.path, "r2_expand01", "= 'ok'",
                          "= 'the legacy table was never used by any "
                          "release'")
    r = lint(tmp_path, repo, "--dialect", "sqlite")
    assert (r.code, r.out) == (0, "lint: ok; checked 8 revisions on "
                                  "sqlite\n")


def test_revision_that_needs_a_database_is_reported(tmp_path):
    """A batch rebuild must reflect the table: offline it cannot."""
    repo = _copy(tmp_path, {"r3_expand01": (
        EXPAND_FIRST, EXPAND_FIRST + "    from alembic import op\n"
        "    with op.batch_alter_table('projects', recreate='always') as b:\n"
        "        b.add_column(sa.Column('x', sa.Integer))\n")})
    r = lint(tmp_path, repo, "--dialect", "mysql")
    assert r.code == 1
    assert "r3_expand01, mysql: cannot be rendered offline" in r.out
    assert r.out.splitlines()[-1] == (
        "lint: 1 problem(s); checked 7 revisions on mysql")
    assert "Lint-Secret-9" not in r.out + r.err
