"""The documentation builds without warnings and covers the whole CLI."""

import os
import re
import subprocess
import sys

import pytest

from tests import helpers
from tests.helpers import ROOT

DOC = os.path.join(ROOT, "doc")


def _read(name):
    with open(os.path.join(DOC, name)) as f:
        return f.read()


def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="the 'doc' extra is not installed")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-W", "-b", "html", DOC,
         str(tmp_path / "html")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "html" / "cli.html").exists()


def test_cli_reference_covers_every_action_and_option():
    actions = helpers.db_actions()
    assert {"expand", "migrate", "contract", "sync", "version",
            "check"} <= set(actions)
    # Each action has its own section, `.. program:: manage db ACTION`,
    # followed by an `.. option::` for each of its options.
    sections = re.split(r"^\.\. program:: ", _read("cli.rst"), flags=re.M)
    documented = {s.split("\n", 1)[0].strip(): s for s in sections[1:]}
    for action, options in actions.items():
        section = documented.get("manage db %s" % action)
        assert section is not None, "doc/cli.rst: no section for " + action
        for option in options:
            assert re.search(r"^\.\. option:: %s\b" % re.escape(option),
                             section, re.M), \
                "doc/cli.rst: %s %s is not documented" % (action, option)
