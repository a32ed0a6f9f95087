"""The journal of steps: what manage started, finished, or left half-done.

Every step is recorded before it runs and again after it, as rows of kind
``step`` in the composite version table:

* ``expand:<revision>`` and ``contract:<revision>``: one revision of a
  branch.  The first pending revision is recorded as ``started`` (and
  committed) before Alembic runs; each revision is recorded ``done`` by the
  transaction that applies it, which also records the next one as
  ``started``; a revision that raises is recorded ``failed`` with the error.
  So a revision killed half-way (MySQL DDL is not transactional) is still
  ``started`` when the next run looks.
* ``migrate:<data migration>``: the batches of one data migration.  Each
  batch is one transaction, recorded in that same transaction
  (:func:`record_batch`), so the journal never claims a batch that did not
  commit; the migration's own row (kind ``data``) says whether it is
  running, done or failed.

``detail`` holds JSON: the command, host and process of the run, and the
error of a failed step.  :func:`open_steps` turns the rows into the
interrupted or failed steps that ``manage db version`` and ``check`` show.
"""

import json
import os
import socket

from sqlalchemy import exc as sa_exc

from manage import database, version_table as vt
from manage.exceptions import ManageError
from manage.repository import BRANCHES
from manage.status import StepState

STARTED = "started"
MIGRATE = "migrate"


def step_name(phase, name):
    return "%s:%s" % (phase, name)


def owner(command):
    return {"command": command, "host": socket.gethostname(),
            "pid": os.getpid()}


def describe(exc, connection_url):
    """One line for an error, without the password."""
    if isinstance(exc, sa_exc.DBAPIError):
        return database.describe_dbapi_error(exc, connection_url)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not isinstance(exc, ManageError):
        text = "%s: %s" % (type(exc).__name__, text) if text else \
            type(exc).__name__
    return database.redact_text(text, connection_url)


class RevisionJournal:
    """Journals the revisions of one branch while Alembic applies them.

    ``pending`` lists the revisions in the order Alembic applies them;
    :attr:`current` is the one running now (the DDL guard asks it too).
    """

    def __init__(self, connection, branch, pending, command, url):
        self.connection = connection
        self.branch = branch
        self.pending = list(pending)
        self.index = 0
        self.owner = owner(command)
        self.url = url

    @property
    def current(self):
        return self.pending[self.index] if self.index < len(self.pending) \
            else None

    def start(self):
        """Record the first pending revision as started, and commit."""
        if self.current is not None:
            if self.connection.in_transaction():
                self.connection.commit()
            with self.connection.begin():
                self._mark(self.current, STARTED)

    def on_version_apply(self, ctx, step, heads, run_args):
        """Alembic callback, inside the transaction of the revision."""
        revision = step.up_revision_id
        self._mark(revision, vt.DONE)
        if revision in self.pending:
            self.index = self.pending.index(revision) + 1
        if self.current is not None:
            self._mark(self.current, STARTED)

    def fail(self, exc):
        """Record the running revision as failed (after a rollback)."""
        if self.current is None:
            return
        try:
            if self.connection.in_transaction():
                self.connection.rollback()
            with self.connection.begin():
                self._mark(self.current, vt.FAILED,
                           error=describe(exc, self.url))
        except Exception:  # the connection may be gone: keep the
            pass           # original error, the step stays "started"

    def _mark(self, revision, state, **info):
        values = dict(revision=revision, state=state,
                      detail=json.dumps(dict(self.owner, **info)))
        if state == STARTED:
            values["started_at"] = vt._now()
        vt.upsert(self.connection, vt.STEP, step_name(self.branch, revision),
                  **values)


def record_batch(connection, name, rows, command=MIGRATE):
    """Journal one committed batch of data migration ``name``.

    Call it inside the batch's transaction, after the batch moved ``rows``:
    it commits or rolls back with the batch.
    """
    vt.add_step_rows(connection, step_name(MIGRATE, name), rows,
                     state=STARTED, detail=json.dumps(owner(command)))


def finish_data_steps(connection, outcomes):
    """Close the journal of the data migrations a run finished.

    Writes only (no read first): on SQLite a transaction that reads, then
    writes, fails at once while another connection writes.
    """
    t = vt.version_table
    for outcome in outcomes:
        connection.execute(t.update().where(
            (t.c.kind == vt.STEP) &
            (t.c.name == step_name(MIGRATE, outcome.name)) &
            (t.c.state == STARTED)).values(state=outcome.state,
                                           updated_at=vt._now()))


def open_steps(step_rows, data_rows, positions, repository):
    """The interrupted or failed steps, oldest first.

    A revision step counts only while its revision is not applied (a later
    run that applied it closed it); a data migration counts while its row
    says running (interrupted, or running now) or failed.
    """
    found = []
    for row in step_rows.values():
        phase, _, name = row["name"].partition(":")
        if phase not in BRANCHES or row["state"] not in (STARTED, vt.FAILED):
            continue
        chain = repository.chain(phase)
        current = positions.get(phase)
        if name in chain and current in chain and \
                chain.index(name) <= chain.index(current):
            continue
        found.append(_state(phase, name, row["state"], row, _info(row)))
    for name, data in data_rows.items():
        if data["state"] not in (vt.RUNNING, vt.FAILED):
            continue
        row = step_rows.get(step_name(MIGRATE, name)) or {}
        info = _info(row)
        if data["state"] == vt.FAILED:
            info["error"] = data.get("detail")
        found.append(_state(MIGRATE, name, STARTED if data["state"] ==
                            vt.RUNNING else vt.FAILED, data, info))
    order = {"expand": 0, MIGRATE: 1, "contract": 2}
    found.sort(key=lambda s: (order[s.phase], s.started_at or ""))
    return found


def _info(row):
    try:
        return dict(json.loads(row.get("detail") or "{}"))
    except (ValueError, TypeError):
        return {}


def _state(phase, name, state, row, info):
    host, pid = info.get("host"), info.get("pid")
    alive = None
    if state == STARTED and host == socket.gethostname() and pid:
        alive = pid != os.getpid() and _pid_alive(pid)
    stamp = row.get("started_at")
    return StepState(
        phase=phase, name=name, state=state, command=info.get("command"),
        host=host, pid=pid, alive=alive, error=info.get("error"),
        rows_done=row.get("rows_done") or 0,
        started_at=stamp.strftime("%Y-%m-%d %H:%M:%S UTC") if stamp
        else None)


def _pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True
