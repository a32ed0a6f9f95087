"""The column-sync example of doc/concepts.rst, run as printed.

The page shows an ``sqlite3`` session against a database expanded to
release 3; this test builds that database, feeds the page's SQL to the
``sqlite3`` shell and compares what it prints with the page.
"""

import os
import re
import shutil
import subprocess

import pytest

from tests import helpers

PAGE = os.path.join(helpers.ROOT, "doc", "concepts.rst")


def _example():
    """(SQL fed to sqlite3, expected output lines) of the page's session."""
    with open(PAGE) as f:
        text = f.read()
    match = re.search(r"\$ sqlite3 manage\.sqlite <<'SQL'\n(.*?)\n   SQL\n"
                      r"(.*?)\n\n", text, re.S)
    assert match, "doc/concepts.rst: the sqlite3 session is missing"
    sql = "\n".join(line[3:] for line in match.group(1).splitlines())
    expected = [line[3:] for line in match.group(2).splitlines()]
    return sql, expected


def test_concepts_sqlite_session_prints_what_the_page_says(tmp_path):
    sqlite3 = shutil.which("sqlite3")
    if sqlite3 is None:
        pytest.fail("the sqlite3 shell is missing (make test installs it)")
    url = "sqlite:///%s" % (tmp_path / "manage.sqlite")
    helpers.deploy(url, 2).sync()
    helpers.query(url, "INSERT INTO users (id, display_name, email, "
                       "email_domain) VALUES (1, 'ann', 'a@x.org', 'x.org'), "
                       "(2, 'bo', 'b@y.org', 'y.org')")
    helpers.query(url, "INSERT INTO projects (id, owner_id, title, is_public) "
                       "VALUES (1, 1, 'alpha', 1), (2, 2, 'beta', 0)")
    helpers.deploy(url, 3).expand()
    sql, expected = _example()
    proc = subprocess.run([sqlite3, "manage.sqlite"], input=sql, text=True,
                          capture_output=True, cwd=str(tmp_path))
    assert (proc.stdout + proc.stderr).splitlines() == expected
