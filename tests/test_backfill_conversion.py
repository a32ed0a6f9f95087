"""A value a backfill expression cannot convert (issue 8, input 6, the
backfill half): a users row whose settings is malformed JSON.

On every engine ``manage db migrate`` fails users_settings_columns by name
(exit 6), the row keeps its settings text and gets no theme or language,
and contract refuses, so the text is never dropped.  MariaDB would store
NULL or a partial value where SQLite and PostgreSQL fail: the backfill
runs in strict mode and checks the warnings of every statement.

The same holds when the malformed row is the only one left to move: on
MariaDB a read (the pending count, the walk, contract's verification)
would see the unreadable document as NULL, agree with the empty columns,
count nothing pending, record the migration done and let contract drop
the text.  Reads check their warnings too.
"""

import json

import pytest

from manage import database
from manage import version_table as vt

from tests import helpers

MALFORMED = ['{"theme": "dark", "language": ', '{theme: "dark"}',
             '{"theme": "dark"} trailing', '[1, 2']


GOOD = json.dumps({"theme": "light", "language": "fr"})


def _users(db_url, text, alone):
    """Users 1..3 with user 2's settings ``text``; ``alone``: users 1 and
    3 have no settings (nothing else to move)."""
    helpers.deploy(db_url, 2).sync()
    helpers.query(db_url, "INSERT INTO users (id, display_name, email, "
                          "settings) VALUES (1, 'a', 'a@x.org', :s), "
                          "(2, 'b', 'b@x.org', :bad), (3, 'c', 'c@x.org', :s)",
                  s=None if alone else GOOD, bad=text)


@pytest.mark.parametrize("alone", [False, True], ids=["among", "alone"])
@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_json_fails_the_migration_by_name(db_url, tmp_path, text,
                                                    alone):
    _users(db_url, text, alone)
    good = None if alone else GOOD
    conf = helpers.write_config(tmp_path, db_url)
    r = helpers.run(["db", "expand"], conf)
    assert r.code == 0, r.err
    r = helpers.run(["db", "migrate"], conf)
    assert r.code == 6, (r.out, r.err)
    assert r.err.startswith("manage: error: 1 data migration(s) failed: "
                            "users_settings_columns: "), r.err
    assert len(r.err.strip().splitlines()) == 1
    assert helpers.query(db_url, "SELECT id, settings, theme, language FROM "
                                 "users WHERE id = 2") == [
        (2, text, None, None)]
    before = helpers.schema_snapshot(db_url)
    r = helpers.run(["db", "contract"], conf)
    assert r.code != 0
    assert "users_settings_columns" in r.err
    assert helpers.schema_snapshot(db_url) == before
    assert helpers.query(db_url, "SELECT settings FROM users ORDER BY "
                                 "id") == [(good,), (text,), (good,)]


@pytest.mark.parametrize("text", MALFORMED[:2])
def test_contract_verification_refuses_an_unreadable_row(db_url, tmp_path,
                                                         text):
    """The safety net alone: the migration is recorded done (by an older
    manage, or by hand), yet a row's document cannot be read.  Contract's
    verification must not take NULL for agreement."""
    _users(db_url, text, alone=True)
    conf = helpers.write_config(tmp_path, db_url)
    assert helpers.run(["db", "expand"], conf).code == 0
    engine = database.create_engine(db_url)
    try:
        with engine.begin() as conn:
            for name in ("users_settings_columns", "users_address_table",
                         "projects_visibility"):
                vt.upsert(conn, vt.DATA, name, state=vt.DONE,
                          rows_remaining=0)
    finally:
        engine.dispose()
    before = helpers.schema_snapshot(db_url)
    r = helpers.run(["db", "contract"], conf)
    assert r.code != 0, r.out
    assert "users_settings_columns" in r.err, r.err
    assert "could not read a value" in r.err or "json" in r.err.lower(), \
        r.err
    assert "[SQL:" not in r.err and "sqlalche.me" not in r.err, r.err
    assert helpers.schema_snapshot(db_url) == before
    assert helpers.query(db_url, "SELECT id, settings FROM users ORDER BY "
                                 "id") == [(1, None), (2, text), (3, None)]
