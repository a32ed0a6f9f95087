"""The keyset walk on every table shape: composite, text, UUID, binary and
date keys, a key that is not unique, cursors that resume (issue 8, inputs 4
and 5).

Each case runs through the library (Manager.migrate) on every engine with
a fixed batch size of 100 rows from Settings, and asserts the row values.
"""

import datetime
import decimal
import json
import uuid

import pytest

import sqlalchemy as sa

from manage import database, version_table as vt
from manage.datamigration import Backfill, SyncBackfill
from manage.datamigration.backfill import decode_key_value, encode_key_value
from manage.datamigration.progress import Recorder
from manage.exceptions import DataMigrationError
from manage.ops import declare_sync
from tests import helpers

BATCH = dict(batch_size=100, batch_min_size=100, batch_max_size=100)

MEMBERS_SYNC = declare_sync("members", old="name", new="display_name")


class MembersByOrg(SyncBackfill):
    """The issue's input 4: a SyncBackfill walking by a key that is not
    unique (org_id of the primary key (org_id, user_id))."""
    name = "members_display_name"
    sync = MEMBERS_SYNC
    key = "org_id"


class Double(Backfill):
    """b = a * 2 on a table of any key shape."""
    name = "shape_double"
    table = "shapes"
    values = {"b": "{a} * 2"}
    where = "{b} IS NULL"


def query_many(url, sql, rows):
    engine = database.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql), rows)
    finally:
        engine.dispose()


def released(url, tmp_path, plugin, **settings):
    """A Manager at release 1 (expanded), migrating ``plugin``."""
    repo = helpers.release_repository(tmp_path, 1)
    helpers.manager(url, repository=repo, plugins=[]).expand()
    return helpers.manager(url, repository=repo, plugins=[plugin],
                           **dict(BATCH, **settings))


def record(url, name):
    """(state, rows_done, cursor) of a data migration."""
    engine = database.create_engine(url)
    try:
        with engine.connect() as conn:
            row = vt.read(conn, vt.DATA)[name]
    finally:
        engine.dispose()
    return row["state"], row["rows_done"], row["cursor"]


def members(url):
    helpers.query(url, "CREATE TABLE members (org_id INTEGER NOT NULL, "
                       "user_id INTEGER NOT NULL, name VARCHAR(64), "
                       "display_name VARCHAR(64), "
                       "PRIMARY KEY (org_id, user_id))")
    rows = [(1, u) for u in range(1, 251)] + [(2, u) for u in range(1, 31)]
    query_many(url, "INSERT INTO members (org_id, user_id, name) "
                            "VALUES (:o, :u, :n)",
                       [dict(o=o, u=u, n="Name %d/%d" % (o, u))
                        for o, u in rows])
    return rows


def test_composite_key_walked_by_a_non_unique_prefix(db_url, tmp_path):
    """Input 4: one org of 250 rows, batch size 100, key="org_id"."""
    m = released(db_url, tmp_path, MembersByOrg())
    rows = members(db_url)
    seen = Recorder()
    result = m.migrate(observer=seen)
    assert [(o.name, o.state, o.rows_moved, o.rows_remaining)
            for o in result.outcomes] == [
        ("members_display_name", "done", 280, 0)]
    assert [(b.limit, b.scanned, b.moved) for b in seen.batches] == [
        (100, 100, 100), (100, 100, 100), (100, 80, 80)]
    assert helpers.query(db_url, "SELECT org_id, user_id, display_name "
                                 "FROM members ORDER BY org_id, user_id") == [
        (o, u, "Name %d/%d" % (o, u)) for o, u in rows]


def test_composite_key_resumes_inside_one_org(db_url, tmp_path):
    """An interrupted pass (budget) saves a cursor inside org 1 and the
    next run resumes after it: no row is scanned twice or skipped."""
    m = released(db_url, tmp_path, MembersByOrg())
    rows = members(db_url)
    first, second = Recorder(), Recorder()
    result = m.migrate(max_count=150, observer=first)
    assert [(o.state, o.rows_moved) for o in result.outcomes] == [
        ("pending", 150)]
    state, done, cursor = record(db_url, "members_display_name")
    assert (state, done) == ("pending", 150)
    assert json.loads(cursor) == {"after": [1, 150], "until": [2, 30],
                                  "key": ["org_id", "user_id"]}
    assert helpers.query(db_url, "SELECT count(*) FROM members WHERE "
                                 "display_name IS NULL") == [(130,)]
    m.migrate(observer=second)
    assert sum(b.scanned for b in first.batches + second.batches) == 280
    assert record(db_url, "members_display_name")[:2] == ("done", 280)
    assert helpers.query(db_url, "SELECT org_id, user_id, display_name "
                                 "FROM members ORDER BY org_id, user_id") == [
        (o, u, "Name %d/%d" % (o, u)) for o, u in rows]


def test_old_cursor_format_still_resumes(db_url, tmp_path):
    """A cursor saved before keys of several columns, {"after": 1,
    "until": 2} on key org_id: it bounds the leading column."""
    m = released(db_url, tmp_path, MembersByOrg())
    members(db_url)
    helpers.query(db_url, "UPDATE members SET display_name = name WHERE "
                          "org_id = 1")
    with m.engine.begin() as conn:
        vt.upsert(conn, vt.DATA, "members_display_name", state=vt.PENDING,
                  cursor=json.dumps({"after": 1, "until": 2}))
    seen = Recorder()
    result = m.migrate(observer=seen)
    assert [(o.state, o.rows_moved) for o in result.outcomes] == [
        ("done", 30)]
    # The first batch starts after org 1: only org 2's 30 rows.
    assert seen.batches[0].scanned == 30
    assert helpers.query(db_url, "SELECT count(*) FROM members WHERE "
                                 "display_name IS NULL OR display_name <> "
                                 "name") == [(0,)]


def _uuid_type(engine_name):
    return "UUID" if engine_name == "postgresql" else "CHAR(36)"


def test_uuid_primary_key(db_url, engine_name, tmp_path):
    """Input 5: the default key on an ``id uuid`` table (PostgreSQL has no
    max(uuid)); a UUID kept as text elsewhere.  Resumed from a cursor."""
    m = released(db_url, tmp_path, Double())
    helpers.query(db_url, "CREATE TABLE shapes (id %s PRIMARY KEY, "
                          "a INTEGER NOT NULL, b INTEGER)"
                  % _uuid_type(engine_name))
    ids = [uuid.uuid4() for _ in range(250)]
    query_many(db_url, "INSERT INTO shapes (id, a) VALUES (:id, :a)",
                       [dict(id=str(i), a=n) for n, i in enumerate(ids)])
    assert m.migrate(max_count=120).outcomes[0].rows_moved == 120
    cursor = json.loads(record(db_url, "shape_double")[2])
    if engine_name == "postgresql":
        assert set(cursor["after"]) == {"uuid"}
        assert uuid.UUID(cursor["after"]["uuid"]) in ids
    else:
        assert uuid.UUID(cursor["after"]) in ids
    result = m.migrate()
    assert [(o.state, o.rows_moved) for o in result.outcomes] == [
        ("done", 130)]
    assert sorted(helpers.query(db_url, "SELECT a, b FROM shapes")) == [
        (n, 2 * n) for n in range(250)]


MIXED = ["Apple", "apricot", "BANANA", "bLUEBERRY", "Cherry", "cranberry",
         "Éclair", "éclat", "zebra", "Zucchini", "_under", "1st", "Ñandú"]


def test_text_primary_key_with_mixed_case(db_url, tmp_path):
    """Text keys compared and ordered by the column's collation in every
    statement of the walk: none is skipped, none done twice."""
    m = released(db_url, tmp_path, Double())
    helpers.query(db_url, "CREATE TABLE shapes (code VARCHAR(40) NOT NULL "
                          "PRIMARY KEY, a INTEGER NOT NULL, b INTEGER)")
    codes = ["%s-%03d" % (MIXED[i % len(MIXED)], i) for i in range(250)]
    query_many(db_url, "INSERT INTO shapes (code, a) VALUES "
                               "(:code, :a)",
                       [dict(code=c, a=n) for n, c in enumerate(codes)])
    seen = Recorder()
    assert m.migrate(max_count=130).outcomes[0].state == "pending"
    result = m.migrate(observer=seen)
    assert [(o.state, o.rows_moved) for o in result.outcomes] == [
        ("done", 120)]
    assert sorted(helpers.query(db_url, "SELECT code, a, b FROM shapes")) == \
        sorted((c, n, 2 * n) for n, c in enumerate(codes))


def _binary_type(engine_name):
    return {"postgresql": "BYTEA", "mysql": "VARBINARY(16)"}.get(
        engine_name, "BLOB")


def test_binary_and_date_keys(db_url, engine_name, tmp_path):
    """A primary key of a date, a binary value and a decimal, saved in the
    cursor and decoded back."""
    m = released(db_url, tmp_path, Double())
    helpers.query(db_url, "CREATE TABLE shapes (day DATE NOT NULL, "
                          "tag %s NOT NULL, amount NUMERIC(10, 2) NOT NULL, "
                          "a INTEGER NOT NULL, b INTEGER, "
                          "PRIMARY KEY (day, tag, amount))"
                  % _binary_type(engine_name))
    start = datetime.date(2024, 2, 27)
    rows = [dict(day=(start + datetime.timedelta(days=n % 5)).isoformat(),
                 tag=bytes([n % 7, 0, 255 - n % 3]),
                 amount="%d.%02d" % (n % 11, n), a=n)
            for n in range(230)]
    query_many(db_url, "INSERT INTO shapes (day, tag, amount, a) "
                               "VALUES (:day, :tag, :amount, :a)", rows)
    assert m.migrate(max_count=100).outcomes[0].rows_moved == 100
    cursor = json.loads(record(db_url, "shape_double")[2])
    assert cursor["key"] == ["day", "tag", "amount"]
    result = m.migrate()
    assert [(o.state, o.rows_moved) for o in result.outcomes] == [
        ("done", 130)]
    assert sorted(helpers.query(db_url, "SELECT a, b FROM shapes")) == [
        (n, 2 * n) for n in range(230)]


def test_unique_not_null_key_when_there_is_no_primary_key(db_url, tmp_path):
    m = released(db_url, tmp_path, Double())
    helpers.query(db_url, "CREATE TABLE shapes (code VARCHAR(20) NOT NULL, "
                          "a INTEGER NOT NULL, b INTEGER, "
                          "CONSTRAINT shapes_code UNIQUE (code))")
    query_many(db_url, "INSERT INTO shapes (code, a) VALUES "
                               "(:c, :a)",
                       [dict(c="c%04d" % n, a=n) for n in range(150)])
    result = m.migrate()
    assert [(o.state, o.rows_moved) for o in result.outcomes] == [
        ("done", 150)]
    assert sorted(helpers.query(db_url, "SELECT a, b FROM shapes")) == [
        (n, 2 * n) for n in range(150)]


def test_table_without_a_unique_key_is_refused_by_name(db_url, tmp_path):
    m = released(db_url, tmp_path, Double())
    helpers.query(db_url, "CREATE TABLE shapes (a INTEGER NOT NULL, "
                          "b INTEGER)")
    helpers.query(db_url, "INSERT INTO shapes (a) VALUES (1)")
    with pytest.raises(DataMigrationError) as info:
        m.migrate()
    assert "shape_double: table shapes has no primary key and " \
           "no unique key of NOT NULL columns" in str(info.value)
    assert helpers.query(db_url, "SELECT a, b FROM shapes") == [(1, None)]


@pytest.mark.parametrize("value", [
    None, True, 7, -2 ** 63, 1.5, "text", "", "{\"uuid\": 1}",
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    decimal.Decimal("-12.340"), datetime.date(2024, 2, 29),
    datetime.datetime(2024, 2, 29, 23, 59, 59, 999999),
    datetime.datetime(2024, 2, 29, 1, 2, 3,
                      tzinfo=datetime.timezone(datetime.timedelta(hours=5))),
    datetime.time(12, 30, 1, 5), datetime.timedelta(days=-1, seconds=5),
    b"\x00\xff binary",
])
def test_cursor_values_are_encoded_losslessly(value):
    data = json.loads(json.dumps(encode_key_value(value)))
    back = decode_key_value(data)
    assert back == value and type(back) is type(value)
