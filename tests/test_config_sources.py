"""Which database a command works on, and advice that works when pasted.

Every command that changes a database first prints the database (password
hidden) and where its URL came from; ``version`` shows the same.  A config
file without ``[database] connection`` is an error, not the embedded
default.  Printed follow-up commands carry the ``--config-file`` the
operator gave.
"""

import json
import os

from sqlalchemy.engine import make_url

from tests import helpers


def test_changing_commands_name_the_database_and_its_source(db_url,
                                                            tmp_path):
    conf = helpers.write_config(tmp_path, db_url)
    shown = make_url(db_url).render_as_string(hide_password=True)
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 0, r.err
    assert r.out.splitlines()[0] == "database: %s (connection from %s)" % (
        shown, conf)
    password = make_url(db_url).password
    if password:
        assert password not in r.out and "***" in shown
    r = helpers.run(["db", "version"], conf)
    assert r.out.splitlines()[0] == "database: %s (connection from %s)" % (
        shown, conf)
    document = json.loads(helpers.run(["db", "version", "--format", "json"],
                                      conf).out)
    assert document["database"] == {"url": shown, "source": conf}
    for action in ("migrate", "contract"):
        r = helpers.run(["db", action], conf)
        assert r.code == 0, r.err
        assert r.out.startswith("database: %s (connection from %s)\n" % (
            shown, conf)), r.out


def test_advice_carries_the_config_file(sqlite_url, tmp_path):
    folder = tmp_path / "etc app"          # a space: the path is quoted
    folder.mkdir()
    conf = helpers.write_config(folder, sqlite_url)
    r = helpers.run(["db", "expand"], conf, raw=True)
    assert r.code == 0, r.err
    assert "next: `manage --config-file '%s' db migrate`, then deploy the " \
           "new code\n" % conf in r.out
    r = helpers.run(["db", "contract"], conf, raw=True)
    assert r.code == 1
    assert r.err == ("manage: error: contract refused: 5 data migration(s) "
                     "not done (users_display_name: pending, "
                     "users_email_domain: pending, projects_visibility: "
                     "pending, users_address_table: pending, "
                     "users_settings_columns: pending); run `manage "
                     "--config-file '%s' db "
                     "migrate` first\n" % conf)


def test_environment_variable_and_embedded_default(tmp_path):
    env = dict(os.environ)
    env.pop("OS_DATABASE__CONNECTION", None)
    r = helpers.run_process(["db", "version"], cwd=str(tmp_path), env=env)
    assert r.code == 0, r.err
    assert r.out.splitlines()[0] == (
        "database: sqlite:///%s (connection from the embedded default)"
        % (tmp_path / "manage.sqlite"))
    url = "sqlite:///%s" % (tmp_path / "from-env.sqlite")
    env["OS_DATABASE__CONNECTION"] = url
    r = helpers.run_process(["db", "expand"], cwd=str(tmp_path), env=env)
    assert r.code == 0, r.err
    assert r.out.splitlines()[0] == (
        "database: %s (connection from the environment variable "
        "OS_DATABASE__CONNECTION)" % url)
    assert (tmp_path / "from-env.sqlite").exists()
    assert not (tmp_path / "manage.sqlite").exists()
