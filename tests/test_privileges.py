"""MySQL with binary logging: triggers need SUPER or trusted creators.

The suite's MariaDB runs with --log-bin, as production does, and the
application user has no SUPER.  The test turns the trust off, as a default
server has it, and checks that expand and contract refuse before changing
anything, that the message names both fixes, and that re-running after the
fix completes the upgrade.
"""

import pytest

from tests import helpers
from tests.conftest import server_for

pytestmark = pytest.mark.parametrize("engine_name", ["mysql"])


@pytest.fixture
def untrusted(engine_name):
    server = server_for("mysql")
    assert server.admin_execute("SELECT @@log_bin")[0][0] == 1
    server.admin_execute("SET GLOBAL log_bin_trust_function_creators = 0")
    yield server
    server.admin_execute("SET GLOBAL log_bin_trust_function_creators = 1")


def test_expand_refused_before_any_change_then_completes(db_url, tmp_path,
                                                         untrusted):
    conf = helpers.write_config(tmp_path, db_url)
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 1
    assert len(r.err.strip().splitlines()) == 1
    assert "binary logging is on" in r.err
    assert "GRANT SUPER ON *.* TO" in r.err
    assert "SET GLOBAL log_bin_trust_function_creators = 1" in r.err
    assert "Traceback" not in r.err
    snap = helpers.schema_snapshot(db_url)
    assert [t for t in snap if not t.startswith("<")] == []

    untrusted.admin_execute("SET GLOBAL log_bin_trust_function_creators = 1")
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 0, r.err
    assert helpers.schema_snapshot(db_url)["<triggers>"]


def test_contract_refused_while_triggers_exist(db_url, tmp_path, untrusted):
    conf = helpers.write_config(tmp_path, db_url)
    untrusted.admin_execute("SET GLOBAL log_bin_trust_function_creators = 1")
    assert helpers.run(["db", "expand"], conf).code == 0
    assert helpers.run(["db", "migrate"], conf).code == 0
    untrusted.admin_execute("SET GLOBAL log_bin_trust_function_creators = 0")
    before = helpers.schema_snapshot(db_url)
    r = helpers.run(["db", "contract"], conf)
    assert r.code == 1
    assert "log_bin_trust_function_creators" in r.err
    assert helpers.schema_snapshot(db_url) == before
    assert helpers.run(["db", "check"], conf).code == 5

    untrusted.admin_execute("SET GLOBAL log_bin_trust_function_creators = 1")
    assert helpers.run(["db", "contract"], conf).code == 0
    assert helpers.run(["db", "check"], conf).code == 0
    assert helpers.schema_snapshot(db_url)["<triggers>"] == []


def test_offline_sync_needs_no_trigger_privilege(db_url, tmp_path,
                                                  untrusted):
    conf = helpers.write_config(tmp_path, db_url)
    r = helpers.run(["db", "sync"], conf)
    assert r.code == 0, r.err
    assert helpers.run(["db", "check"], conf).code == 0


def test_the_advised_grant_runs_when_pasted(db_url, tmp_path, untrusted):
    """The GRANT in the message is valid SQL (the account quoted as
    'user'@'host'), and once run, expand completes with trust still off."""
    import re
    conf = helpers.write_config(tmp_path, db_url)
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 1
    grant = re.search(
        r"Fix one of: (GRANT SUPER ON \*\.\* TO '[^']+'@'[^']+');",
                      r.err)
    assert grant, r.err
    untrusted.admin_execute(grant.group(1))
    try:
        r = helpers.run(["db", "expand"], conf)
        assert r.code == 0, r.err
        assert helpers.schema_snapshot(db_url)["<triggers>"]
    finally:
        untrusted.admin_execute(grant.group(1).replace(
            "GRANT", "REVOKE").replace(" TO ", " FROM "))
