"""The composite version table: one table for everything manage records.

``manage_version`` holds one row per tracked thing, keyed by ``(kind, name)``:

* ``kind = 'branch'``: the ``expand`` and ``contract`` branches, with the
  revision each stands at (mirrors Alembic's ``alembic_version``, which stays
  underneath and remains the authority on revisions);
* ``kind = 'data'``: each data migration, with its state (pending, running,
  done, failed), the rows it has moved, the rows it last saw remaining, a
  cursor for resumable batches and the last error;
* ``kind = 'step'``: room for a journal of started and finished steps;
* ``kind = 'lock'``: who holds the run lock (host and process), so that a
  second run can say whom it waited for; present only while a run holds
  it (or if the holder was killed: the next holder overwrites it).
* ``kind = 'sync'``: each column sync (one trigger group) and column copy
  an online expand installed, with the expand revision that declared it;
  ``detail`` holds, as JSON, the declarations, the statements that create
  and drop its triggers, and each trigger's table and definition digest
  (see :mod:`manage.sync_registry`).  The contract revision that removes
  the sync deletes its row.

New kinds of record need new rows, not new columns.
"""

import datetime

import sqlalchemy as sa

TABLE_NAME = "manage_version"

BRANCH = "branch"
DATA = "data"
STEP = "step"
LOCK = "lock"
SYNC = "sync"

PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"

metadata = sa.MetaData()
version_table = sa.Table(
    TABLE_NAME, metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    # 191 characters keep the key within MySQL's index limit in utf8mb4.
    sa.Column("name", sa.String(191), primary_key=True),
    sa.Column("revision", sa.String(64), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("rows_done", sa.BigInteger, nullable=False, default=0),
    sa.Column("rows_remaining", sa.BigInteger, nullable=True),
    sa.Column("cursor", sa.Text, nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("started_at", sa.DateTime, nullable=True),
    sa.Column("updated_at", sa.DateTime, nullable=True),
)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def ensure(connection):
    """Create the table if it is missing."""
    version_table.create(connection, checkfirst=True)


def exists(connection):
    return sa.inspect(connection).has_table(TABLE_NAME)


def read(connection, kind=None):
    """Rows as dicts keyed by name (of one kind) or by (kind, name)."""
    query = sa.select(version_table)
    if kind is not None:
        query = query.where(version_table.c.kind == kind)
    rows = [dict(r._mapping) for r in connection.execute(query)]
    if kind is not None:
        return {r["name"]: r for r in rows}
    return {(r["kind"], r["name"]): r for r in rows}


def upsert(connection, kind, name, **values):
    """Insert or update one row; ``updated_at`` is set each time."""
    values["updated_at"] = _now()
    key = (version_table.c.kind == kind) & (version_table.c.name == name)
    result = connection.execute(
        version_table.update().where(key).values(**values))
    if result.rowcount == 0:
        values.setdefault("state", PENDING)
        values.setdefault("rows_done", 0)
        values.setdefault("started_at", values["updated_at"])
        connection.execute(version_table.insert().values(
            kind=kind, name=name, **values))


def delete(connection, kind, name):
    connection.execute(version_table.delete().where(
        (version_table.c.kind == kind) & (version_table.c.name == name)))


def set_branch(connection, branch, revision):
    upsert(connection, BRANCH, branch, revision=revision, state=DONE)


def add_rows(connection, name, rows, **values):
    """Count moved rows for a data migration, in the caller's transaction."""
    values["updated_at"] = _now()
    connection.execute(
        version_table.update()
        .where((version_table.c.kind == DATA) & (version_table.c.name == name))
        .values(rows_done=version_table.c.rows_done + rows, **values))


def add_step_rows(connection, name, rows, **values):
    """Add to the rows a journal step has done; insert its row if missing.

    One statement when the row exists (the usual case: once per batch).
    """
    values["updated_at"] = _now()
    key = (version_table.c.kind == STEP) & (version_table.c.name == name)
    result = connection.execute(version_table.update().where(key).values(
        rows_done=version_table.c.rows_done + rows, **values))
    if result.rowcount == 0:
        upsert(connection, STEP, name, rows_done=rows, **values)
