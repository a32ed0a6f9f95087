"""Column-sync declarations and their grouping into one trigger per event."""

import pytest
import sqlalchemy as sa

from data_migrations import users_display_name, users_email_domain
from manage import column_sync, database, dialects, ops
from manage.column_sync import ColumnSyncError

RENAME, DERIVED = users_display_name.SYNC, users_email_domain.SYNC


def test_a_single_sync_keeps_its_own_name():
    assert column_sync.as_group(RENAME).name == \
        "msync_users_name_display_name"
    pairs = [(("name",), ("display_name",))]
    assert column_sync.group_name("users", pairs) == RENAME.name


def test_group_name_is_stable_short_and_order_sensitive():
    name = column_sync.as_group([RENAME, DERIVED]).name
    assert name.startswith("msync_users_") and len(name) <= 48
    assert name == column_sync.as_group([RENAME, DERIVED]).name
    assert name != column_sync.as_group([DERIVED, RENAME]).name


@pytest.mark.parametrize("syncs, message", [
    ([], "no column sync"),
    ([RENAME, ops.declare_sync("projects", "title", "label")], "one table"),
    ([RENAME, ops.declare_sync("users", "name", "nick")], "share columns"),
])
def test_invalid_groups_are_refused(syncs, message):
    with pytest.raises(ColumnSyncError, match=message):
        column_sync.as_group(syncs)


def test_declarations_and_columns_do_not_mix():
    with pytest.raises(ColumnSyncError, match="not both"):
        ops._declarations(RENAME, "x", None, None, None, "new_to_old", ())
    assert ops._declarations(RENAME, DERIVED, None, None, None,
                             "new_to_old", ()) == [RENAME, DERIVED]


def test_grouped_triggers_sync_every_pair_on_sqlite(tmp_path):
    """One insert and one update trigger carry both syncs' work."""
    engine = database.create_engine("sqlite:///%s" % (tmp_path / "g.db"))
    support = dialects.get("sqlite")
    statements = support.create_sync_sql([RENAME, DERIVED])
    assert len(statements) == 2
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, "
            "display_name TEXT, email TEXT, email_domain TEXT)")
        for sql in statements:
            conn.exec_driver_sql(sql)
        conn.exec_driver_sql("INSERT INTO users (id, name, email) VALUES "
                             "(1, 'ann', 'ann@Ex.ORG')")
        conn.exec_driver_sql("UPDATE users SET display_name = 'anne', "
                             "email = 'a@b.io' WHERE id = 1")
        row = conn.execute(sa.text("SELECT name, display_name, email_domain "
                                   "FROM users")).one()
        assert tuple(row) == ("anne", "anne", "b.io")
        assert support.list_sync_triggers(conn) == [
            column_sync.as_group([RENAME, DERIVED]).name + s
            for s in ("_ai", "_au")]
    engine.dispose()
