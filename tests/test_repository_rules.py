"""Input 8 of issue 8: a revision that reaches into the other branch.

Every expand revision follows and depends on expand revisions only; every
contract revision follows contract revisions only and depends on at least one
expand revision (only expand revisions, in the contract branch's order); each
file sits in the folder of its branch.  A repository that breaks a rule is
refused when it loads (library and every command: one line naming the file
and the fix, exit 1) and reported by ``manage db lint`` (exit 1).
"""

import os
import shutil

import pytest

from manage import api, config
from manage.exceptions import RepositoryError
from manage.repository import Repository
from tests import helpers

#: name -> (edits: [(revision prefix, old text, new text)], the revision
#: blamed, the message).  Built from copies of the bundled repository.
CASES = {
    "expand_depends_on_contract": (
        [("r3_expand02", 'depends_on = None', 'depends_on = "r3_contract01"')],
        "r3_expand02",
        "revision r3_expand02 (expand/r3_expand02_settings_address.py) is an "
        "expand revision that depends on contract revision r3_contract01; an "
        "expand revision may need expand revisions only (expand runs before "
        "the new code is deployed, contract after): remove 'r3_contract01' "
        "from its depends_on"),
    "expand_follows_contract": (
        [("r3_expand02", 'down_revision = "r3_expand01"',
          'down_revision = "r3_contract01"')],
        "r3_expand02",
        "revision r3_expand02 (expand/r3_expand02_settings_address.py) sits "
        "in expand/ but is on the contract branch (it follows r3_contract01); "
        "move the file to contract/, or set its down_revision to the revision "
        "before it in expand/ (and 2 more problem(s): `manage db lint` lists "
        "them)"),
    "contract_without_depends_on": (
        [("r3_contract01", 'depends_on = "r3_expand01"', 'depends_on = None')],
        "r3_contract01",
        "revision r3_contract01 (contract/r3_contract01_drop_is_public.py) is "
        "a contract revision that depends on no expand revision; without one "
        "manage cannot tell which data migrations must be finished and "
        "recounted before it runs: set depends_on to the expand revision "
        "whose changes it completes (depends_on = \"<expand revision>\")"),
    "contract_root_without_depends_on": (
        [("r1_contract01", 'depends_on = "r1_expand01"', 'depends_on = None')],
        "r1_contract01",
        "revision r1_contract01 (contract/r1_contract01_initial.py) is a "
        "contract revision that depends on no expand revision; without one "
        "manage cannot tell which data migrations must be finished and "
        "recounted before it runs: set depends_on to the expand revision "
        "whose changes it completes (depends_on = \"<expand revision>\")"),
    "contract_depends_on_contract": (
        [("r3_contract02", 'depends_on = "r3_expand02"',
          'depends_on = ("r3_expand02", "r2_contract01")')],
        "r3_contract02",
        "revision r3_contract02 (contract/r3_contract02_drop_settings_"
        "address.py) is a contract revision that depends on contract "
        "revision r2_contract01; a contract revision depends on the expand "
        "revisions whose changes it completes, and follows the contract "
        "revision before it through down_revision only: remove "
        "'r2_contract01' from its depends_on"),
    "contract_dependencies_out_of_order": (
        [("r3_contract01", 'depends_on = "r3_expand01"',
          'depends_on = "r3_expand02"'),
         ("r3_contract02", 'depends_on = "r3_expand02"',
          'depends_on = "r3_expand01"')],
        "r3_contract02",
        "revision r3_contract02 (contract/r3_contract02_drop_settings_"
        "address.py) is a contract revision that depends on expand revision "
        "r3_expand01, which comes before r3_expand02 that the earlier "
        "contract revision r3_contract01 depends on; contract revisions run "
        "in order, so each one's expand dependencies must not come before "
        "those of the one before it: set its depends_on to 'r3_expand02' or "
        "a later expand revision"),
    "contract_follows_expand": (
        [("r3_contract02", 'down_revision = "r3_contract01"',
          'down_revision = ("r3_contract01", "r3_expand02")')],
        "r3_contract02",
        "revision r3_contract02 (contract/r3_contract02_drop_settings_"
        "address.py) is on both branches (it follows r3_contract01, "
        "r3_expand02); a revision follows revisions of its own branch only: "
        "set its down_revision to the revision before it in contract/ (None "
        "for the first) and use depends_on for what a contract revision "
        "needs from the expand branch"),
    "expand_file_labelled_contract": (
        [("r3_expand02", 'branch_labels = None',
          'branch_labels = ("contract",)')],
        None,
        "revision r3_expand02 (expand/r3_expand02_settings_address.py) sets "
        "branch_labels 'contract', which revision r1_contract01 already "
        "carries; only the first revision of a branch is labelled: set "
        "branch_labels = None in expand/r3_expand02_settings_address.py (an "
        "expand/ revision is on the expand branch, a contract/ revision on "
        "the contract branch)"),
    "contract_file_in_expand_folder": (
        [("move", "contract/r3_contract02_drop_settings_address.py",
          "expand/r3_contract02_drop_settings_address.py")],
        "r3_contract02",
        "revision r3_contract02 (expand/r3_contract02_drop_settings_"
        "address.py) sits in expand/ but is on the contract branch (it "
        "follows r3_contract01); move the file to contract/, or set its "
        "down_revision to the revision before it in expand/"),
    "expand_drops_a_sync": (
        [("r3_expand02", "    sync_columns(users_settings.SYNC)\n",
          "    sync_columns(users_settings.SYNC)\n"
          "    from manage.ops import drop_column_sync\n"
          "    drop_column_sync(users_settings.SYNC)\n")],
        "r3_expand02",
        "revision r3_expand02 (expand/r3_expand02_settings_address.py) is an "
        "expand revision that calls drop_column_sync, which removes the "
        "triggers that carry old code's writes while old code still runs; "
        "move the call to the contract revision"),
    "contract_installs_a_sync": (
        [("r3_contract01", "    drop_column_sync(projects_visibility.SYNC)\n",
          "    from manage import ops\n"
          "    ops.sync_columns(projects_visibility.SYNC)\n")],
        "r3_contract01",
        "revision r3_contract01 (contract/r3_contract01_drop_is_public.py) "
        "is a contract revision that calls sync_columns, which installs "
        "triggers after the new code is deployed, when contract may only "
        "remove; move the call to an expand revision"),
    "revision_on_neither_branch": (
        [("r3_expand02", 'down_revision = "r3_expand01"',
          'down_revision = None')],
        "r3_expand02",
        "revision r3_expand02 (expand/r3_expand02_settings_address.py) is on "
        "neither branch: it has no branch label and follows no revision of "
        "the expand or contract branch (down_revision = None), so manage "
        "never runs it but plain `alembic upgrade heads` would; set its "
        "down_revision to the last revision of the expand branch (and 1 more "
        "problem(s): `manage db lint` lists them)"),
}


def bad_repository(folder, name):
    """A release-3 copy of the bundled repository broken as CASES[name]."""
    repo = helpers.release_repository(folder, 3).path
    for prefix, old, new in CASES[name][0]:
        if prefix == "move":
            shutil.move(os.path.join(repo, old), os.path.join(repo, new))
        else:
            helpers.edit_revision(repo, prefix, old, new)
    return repo


def _lint_text(message):
    """The message without the "(and N more ...)" tail lint does not need."""
    return message.split(" (and ")[0] if "(and " in message and \
        message.endswith("lists them)") else message


@pytest.fixture(params=sorted(CASES))
def case(request, tmp_path):
    name = request.param
    return bad_repository(tmp_path, name), CASES[name][1], CASES[name][2]


def test_library_refuses_the_repository_when_it_loads(case, tmp_path):
    path, _, message = case
    with pytest.raises(RepositoryError) as caught:
        Repository(path)
    assert str(caught.value) == message
    # the Manager loads it too: nothing is connected to, nothing created
    url = "sqlite:///%s" % (tmp_path / "never.sqlite")
    with pytest.raises(RepositoryError) as caught:
        api.Manager(config.Settings(connection=url, repository=path))
    assert str(caught.value) == message
    assert not (tmp_path / "never.sqlite").exists()


def test_version_refuses_with_one_line_exit_1(case, tmp_path):
    path, _, message = case
    url = "sqlite:///%s" % (tmp_path / "never.sqlite")
    conf = helpers.write_config(tmp_path, url, repository=path)
    for action in ("version", "check", "expand", "contract", "sync"):
        r = helpers.run(["db", action], conf)
        assert (r.code, r.out, r.err) == (1, "", "manage: error: %s\n"
                                          % message), action
    assert not (tmp_path / "never.sqlite").exists()


def test_lint_reports_the_same_text_exit_1(case, tmp_path):
    path, blamed, message = case
    conf = helpers.write_config(tmp_path, "sqlite://", repository=path)
    r = helpers.run(["db", "lint", "--dialect", "sqlite"], conf)
    assert r.code == 1
    if blamed is None:  # Alembic cannot load it at all: nothing to render
        assert (r.out, r.err) == ("", "manage: error: %s\n" % message)
        return
    lines = r.out.splitlines()
    assert lines[0] == "%s: %s" % (blamed, _lint_text(message))
    assert lines[-1].startswith("lint: ")
    assert " problem(s); checked " in lines[-1]
    assert r.err == ""


def test_installed_command_exits_1(tmp_path):
    path = bad_repository(tmp_path, "expand_depends_on_contract")
    conf = helpers.write_config(tmp_path, "sqlite:///%s" % (
        tmp_path / "never.sqlite"), repository=path)
    r = helpers.run_process(["db", "version"], conf)
    assert (r.code, r.out) == (1, "")
    assert r.err == "manage: error: %s\n" % CASES[
        "expand_depends_on_contract"][2]
    r = helpers.run_process(["db", "lint"], conf)
    assert r.code == 1
    assert r.out.splitlines()[0] == "r3_expand02: %s" % CASES[
        "expand_depends_on_contract"][2]


def test_every_problem_is_listed_by_lint(tmp_path):
    path = bad_repository(tmp_path, "expand_follows_contract")
    r = helpers.run(["db", "lint", "--dialect", "sqlite"],
                    helpers.write_config(tmp_path, "sqlite://",
                                         repository=path))
    assert r.code == 1
    assert r.out.splitlines()[:3] == [
        "r3_expand02: revision r3_expand02 (expand/r3_expand02_settings_"
        "address.py) sits in expand/ but is on the contract branch (it "
        "follows r3_contract01); move the file to contract/, or set its "
        "down_revision to the revision before it in expand/",
        "r3_contract02: revision r3_contract02 (contract/r3_contract02_drop_"
        "settings_address.py) is a contract revision that depends on "
        "contract revision r3_expand02; a contract revision depends on the "
        "expand revisions whose changes it completes, and follows the "
        "contract revision before it through down_revision only: remove "
        "'r3_expand02' from its depends_on",
        "repository: the contract branch has 2 heads (r3_contract02, "
        "r3_expand02); it must be one line of revisions: make one revision "
        "follow the other"]


def test_bundled_repository_has_no_problem():
    repo = Repository()
    assert repo.problems == []
    assert Repository(strict=False).problems == []


# -- on a live database ------------------------------------------------------
def _triggers(url):
    return helpers.schema_snapshot(url)["<triggers>"]


def test_expand_reaching_into_contract_drops_no_trigger(db_url, tmp_path):
    """The issue's example: release 2 expanded and migrated (its sync
    triggers installed, its contract not run); the next release's first
    expand revision depends on release 2's contract revision.  Expand used
    to run that contract revision's DROP TRIGGERs (MariaDB keeps them
    dropped) and blame the expand revision; now nothing runs."""
    release2 = helpers.deploy(db_url, 2)
    release2.expand()
    release2.migrate()
    release2.close()
    helpers.query(db_url, "INSERT INTO users (id, name, email) VALUES "
                          "(1, 'alice', 'alice@example.org')")
    before = helpers.schema_snapshot(db_url)
    rows = helpers.query(db_url, "SELECT id, name, display_name, "
                                 "email_domain FROM users")
    assert rows == [(1, "alice", "alice", "example.org")]
    assert len(before["<triggers>"]) > 0
    repo = helpers.release_repository(tmp_path, 3).path
    helpers.edit_revision(repo, "r3_expand01", "depends_on = None",
                          'depends_on = "r2_contract01"')
    message = (
        "revision r3_expand01 (expand/r3_expand01_visibility.py) is an "
        "expand revision that depends on contract revision r2_contract01; "
        "an expand revision may need expand revisions only (expand runs "
        "before the new code is deployed, contract after): remove "
        "'r2_contract01' from its depends_on")
    conf = helpers.write_config(tmp_path, db_url, repository=repo)
    r = helpers.run(["db", "expand"], conf)
    assert (r.code, r.err) == (1, "manage: error: %s\n" % message)
    assert helpers.schema_snapshot(db_url) == before
    assert _triggers(db_url) == before["<triggers>"]
    # the triggers still work: old code's write reaches display_name
    helpers.query(db_url, "UPDATE users SET name = 'Alicia' WHERE id = 1")
    assert helpers.query(db_url, "SELECT name, display_name FROM users") \
        == [("Alicia", "Alicia")]
    with pytest.raises(RepositoryError) as caught:
        Repository(repo)
    assert str(caught.value) == message


def test_expand_revision_no_contract_names_is_recounted(db_url, tmp_path):
    """r3_expand01 (projects_visibility) is named by no contract revision:
    the first contract revision after it completes it, so its data
    migration is recounted before that one runs (it used to be skipped and
    contract dropped is_public with a value visibility did not have)."""
    repo = helpers.release_repository(tmp_path, 3)
    helpers.edit_revision(repo.path, "r3_contract01",
                          'depends_on = "r3_expand01"',
                          'depends_on = "r3_expand02"')
    repo = Repository(repo.path)
    assert repo.contracts_after("r3_expand01") == {"r3_contract01"}
    assert repo.contracts_after("r3_expand02") == {"r3_contract01",
                                                   "r3_contract02"}
    manager = helpers.manager(db_url, repository=repo,
                              plugins=helpers.release_plugins(repo))
    manager.expand()
    manager.migrate()
    from data_migrations.projects_visibility import SYNC
    for statement in manager.support.drop_sync_sql(SYNC.table, SYNC.name):
        helpers.query(db_url, statement)  # a write no trigger sees:
    helpers.query(db_url, "INSERT INTO users (id, email) VALUES "
                          "(1, 'a@example.org')")
    helpers.query(db_url, "INSERT INTO projects (id, owner_id, title, "
                          "is_public) VALUES (1, 1, 'p', :flag)", flag=True)
    from manage.exceptions import OutOfOrderError
    with pytest.raises(OutOfOrderError) as caught:
        manager.contract()
    assert "projects_visibility: 1" in str(caught.value)
    assert helpers.query(db_url, "SELECT id, is_public, visibility FROM "
                                 "projects") == [(1, True, None)]
    manager.close()
