"""A value a backfill expression cannot convert (issue 8, input 6, the
backfill half): a users row whose settings is malformed JSON.

On every engine ``manage db migrate`` fails users_settings_columns by name
(exit 2), the row keeps its settings text and gets no theme or language,
and contract refuses, so the text is never dropped.  MariaDB would store
NULL or a partial value where SQLite and PostgreSQL fail: the backfill
runs in strict mode and checks the warnings of every statement.
"""

import json

import pytest

from tests import helpers

MALFORMED = ['{"theme": "dark", "language": ', '{theme: "dark"}',
             '{"theme": "dark"} trailing', '[1, 2']


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_json_fails_the_migration_by_name(db_url, tmp_path, text):
    helpers.deploy(db_url, 2).sync()
    good = json.dumps({"theme": "light", "language": "fr"})
    helpers.query(db_url, "INSERT INTO users (id, display_name, email, "
                          "settings) VALUES (1, 'a', 'a@x.org', :s), "
                          "(2, 'b', 'b@x.org', :bad), (3, 'c', 'c@x.org', :s)",
                  s=good, bad=text)
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
