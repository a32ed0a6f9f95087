"""The command line's own options: --version, --shell_completion."""

import subprocess

from tests import helpers


def test_version_option():
    r = helpers.run_process(["--version"])
    assert r.code == 0, r.err
    assert r.out.strip() == helpers.installed_version()


def _complete(script, words):
    """What bash completes for the last of ``words`` with ``script``."""
    line = " ".join("'%s'" % w for w in words)
    proc = subprocess.run(
        ["bash", "-c", '%s\nCOMP_WORDS=(%s); COMP_CWORD=%d; '
         '_manage_complete; echo "${COMPREPLY[*]}"' % (
             script, line, len(words) - 1)],
        capture_output=True, text=True, check=True)
    return proc.stdout.split()


def test_bash_completion_completes_actions_and_their_options():
    r = helpers.run_process(["--shell_completion", "bash"])
    assert r.code == 0, r.err
    script = r.out
    assert _complete(script, ["manage", "db", "mi"]) == ["migrate"]
    assert _complete(script, ["manage", "--config-file", "a.conf", "db",
                              "migrate", "--max"]) == ["--max-count"]
    assert _complete(script, ["manage", "--con"]) == ["--config-file",
                                                      "--config-dir"]
    assert sorted(_complete(script, ["manage", "db", ""])) == sorted(
        helpers.db_actions())
    r = helpers.run_process(["--shell_completion", "fish"])
    assert (r.code, r.err) == (2, "manage: error: --shell_completion takes "
                                  "bash or zsh\n")


def test_main_leaves_the_process_state_as_it_was(sqlite_url, tmp_path):
    """A service may call cli.main in its own process: its root logger,
    sys.stdout and sys.stderr are the same afterwards."""
    import logging
    import sys
    root = logging.getLogger()
    marker = logging.NullHandler()
    root.addHandler(marker)
    before = (list(root.handlers), root.level, sys.stdout, sys.stderr,
              logging.getLogger("alembic").level)
    try:
        conf = helpers.write_config(tmp_path, sqlite_url)
        assert helpers.run(["--debug", "db", "sync"], conf).code == 0
        r = helpers.run(["--debug", "db", "expand"], conf)
        assert r.code == 0
        after = (list(root.handlers), root.level, sys.stdout, sys.stderr,
                 logging.getLogger("alembic").level)
        assert after == before
    finally:
        root.removeHandler(marker)


def test_debug_shows_alembic_progress(sqlite_url, tmp_path):
    conf = helpers.write_config(tmp_path, sqlite_url)
    r = helpers.run(["--debug", "db", "expand"], conf)
    assert r.code == 0, r.err
    assert "INFO Running upgrade  -> r1_expand01" in r.err
