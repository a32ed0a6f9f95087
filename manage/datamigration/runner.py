"""Running data migrations in short transactions, recording their progress.

For each migration the runner counts the pending rows, then runs batches
until the pass is done, and counts again (a new pass starts if rows are
left, for example rows that old code wrote above the high-water mark).
A migration recorded as done is counted again too (unless ``recount``
says its rows are gone, e.g. its contract revision ran): rows written
since that it counts as pending make it run again.

* Each batch runs in its own transaction together with the update of the
  migration's row in the composite version table (rows moved, estimate of
  rows remaining, the cursor), so what is recorded always matches what was
  committed and a killed run resumes from the last committed batch.
* The batch size adapts toward a target batch duration, within bounds
  (:class:`BatchSizer`); the runner pauses between batches and waits while
  a load check is over its threshold (:mod:`manage.datamigration.throttle`).
* A budget (``max_count``) bounds the rows moved in one run; a batch never
  moves more rows than its limit.
* Batch connections are made strict (``DialectSupport.
  prepare_data_session``): a value an expression cannot convert fails the
  batch instead of becoming NULL.
* A failing migration is recorded as failed (its cursor kept) and the
  others still run.  Deadlocks and lock wait timeouts are retried.
* Everything the operator should see goes to an observer
  (:mod:`manage.datamigration.progress`); nothing is printed here.
"""

import dataclasses
import json
import time
from typing import List, Optional

from sqlalchemy import exc as sa_exc

from manage import database, dialects, journal, version_table as vt
from manage.datamigration.progress import BatchEvent, Observer
from manage.datamigration.throttle import QueryCheck, Throttle
from manage.exceptions import ConfigError, PluginError

#: Driver error codes meaning "try the transaction again".


#: Attempts of a batch that hit a deadlock or a lock wait timeout.
RETRIES = 5


class BatchSizer:
    """Steers the batch size toward the target duration, within bounds.

    Starts at ``batch_size``; after each full batch the size becomes
    ``rows * batch_target_seconds / seconds``, at most doubled or halved at
    once, and clamped to ``[batch_min_size, batch_max_size]``.
    """

    def __init__(self, settings):
        self.settings = settings
        self.size = self._clamp(settings.batch_size)

    def _clamp(self, size):
        s = self.settings
        return max(s.batch_min_size, min(s.batch_max_size, int(size)))

    def record(self, rows, seconds):
        if rows <= 0:
            return
        ideal = (rows * self.settings.batch_target_seconds / seconds
                 if seconds > 0 else 2 * rows)
        self.size = self._clamp(min(max(ideal, rows / 2), rows * 2))


@dataclasses.dataclass
class MigrationOutcome:
    name: str
    state: str
    rows_moved: int = 0
    rows_remaining: Optional[int] = None
    error: Optional[str] = None


@dataclasses.dataclass
class MigrateResult:
    outcomes: List[MigrationOutcome]

    @property
    def rows_moved(self):
        return sum(o.rows_moved for o in self.outcomes)

    @property
    def failures(self):
        return [o for o in self.outcomes if o.state == vt.FAILED]

    @property
    def work_remaining(self):
        return any(o.state != vt.DONE for o in self.outcomes)


class _Stop(Exception):
    """Ends a migration early: as pending (``go_on``: budget spent or
    throttled; the cursor stays) or as failed."""

    def __init__(self, detail, go_on=False):
        super().__init__(detail)
        self.detail = detail
        self.go_on = go_on


class Runner:
    """Runs ``plugins`` paced and throttled as ``settings`` (a
    :class:`manage.config.Settings`) say; ``load_checks`` add to the
    configured throttle checks, ``throttle`` replaces them.

    ``recount(plugin) -> bool`` says whether a migration recorded as done
    is counted again (and run again when rows need it); None: always.
    """

    def __init__(self, engine, plugins, settings, observer=None,
                 load_checks=(), throttle=None, clock=time.monotonic,
                 sleep=time.sleep, recount=None):
        s = settings
        self.support = dialects.get(engine.dialect.name)
        if throttle is None:
            checks = list(load_checks) + self.support.load_checks(s)
            if s.throttle_query:
                checks.append(QueryCheck(s.throttle_query,
                                         s.throttle_query_max))
            throttle = Throttle(checks, max_wait=s.throttle_max_wait)
        self.engine = engine
        self.plugins = plugins
        self.settings = settings
        self.url = settings.connection
        self.observer = observer or Observer()
        self.throttle = throttle
        self.clock = clock
        self.sleep = sleep
        self.recount = recount or (lambda plugin: True)

    def run(self, max_count=None):
        with self.engine.connect() as conn:
            for check in self.throttle.checks:
                check.measure(conn)   # a broken throttle_query: say so now
        with self.engine.begin() as conn:
            vt.ensure(conn)
            recorded = vt.read(conn, vt.DATA)
        self.budget = max_count
        outcomes, stopped = [], None
        for plugin in self.plugins:
            row = recorded.get(plugin.name) or {}
            state, remaining = row.get("state", vt.PENDING), \
                row.get("rows_remaining")
            cursor = row.get("cursor")
            if state == vt.DONE:
                # Done is a record, not a count: rows written since may
                # need the migration again.
                remaining = self._recount(plugin) if self.recount(plugin) \
                    else 0
                if isinstance(remaining, MigrationOutcome):
                    outcomes.append(remaining)  # the count failed
                    continue
                if not remaining:
                    outcomes.append(MigrationOutcome(plugin.name, vt.DONE,
                                                     0, 0))
                    continue
                state, cursor = vt.PENDING, None
            if stopped or self.budget == 0:
                outcome = MigrationOutcome(plugin.name, state, 0, remaining,
                                           stopped)
            else:
                outcome = self._run_one(plugin, cursor)
                if outcome.state == vt.PENDING and outcome.error:
                    stopped = outcome.error  # throttled: the others wait too
            outcomes.append(outcome)
        return MigrateResult(outcomes)

    # -- one migration -----------------------------------------------------
    def _run_one(self, plugin, saved_cursor):
        cursor = json.loads(saved_cursor) if saved_cursor else None
        self.moved = 0  # by this migration in this run
        try:
            with self.engine.begin() as conn:
                vt.upsert(conn, vt.DATA, plugin.name, state=vt.RUNNING,
                          detail=None)
            remaining = self._count(plugin)
            self.observer.started(plugin.name, remaining)
            idle_passes = 0
            while remaining:
                pass_moved, remaining = self._pass(plugin, cursor, remaining)
                cursor = None
                idle_passes = 0 if pass_moved else idle_passes + 1
                if remaining and idle_passes >= 2:
                    raise _Stop("made no progress: a pass over the table "
                                "moved no rows while %d are pending"
                                % remaining)
        except ConfigError:
            # The configuration, not this migration (a failing
            # throttle_query): stop the run, leave the record pending.
            with self.engine.begin() as conn:
                vt.upsert(conn, vt.DATA, plugin.name, state=vt.PENDING)
            raise
        except _Stop as stop:
            state = vt.PENDING if stop.go_on else vt.FAILED
            remaining = self._count(plugin) if stop.go_on else None
            return self._finish(plugin, state, remaining, stop.detail)
        except Exception as exc:  # a plugin's failure must not stop others
            return self._finish(plugin, vt.FAILED, None, self._describe(exc))
        return self._finish(plugin, vt.DONE, 0, None, cursor=None)

    def _pass(self, plugin, cursor, remaining):
        """Batches until the pass is done; returns the rows moved and the
        rows pending after it (counted; the last batch event carries it,
        so a progress display ends at 100 % when nothing is left)."""
        sizer = BatchSizer(self.settings)

        def begin(conn):
            self._write_first(conn, plugin)
            started = plugin.begin(conn, cursor)
            vt.upsert(conn, vt.DATA, plugin.name, cursor=_dump(started))
            return started
        cursor = self.transaction(begin)
        moved = 0
        # Rows reported moved since the last count, and that count: a
        # plugin that reports more rows than were pending is counted again,
        # and fails if the count did not drop (it reports rows it does not
        # move, and would otherwise run for ever).
        checkpoint, since = remaining, 0
        while True:
            if self.budget is not None and self.budget <= 0:
                raise _Stop(None, go_on=True)
            self._wait_for_load(plugin.name)
            limit = sizer.size if self.budget is None else min(
                sizer.size, self.budget)
            start = self.clock()
            batch = self._batch(plugin, limit, cursor,
                                max(remaining - moved, 0))
            seconds = self.clock() - start
            moved += batch.moved
            self.moved += batch.moved
            since += batch.moved
            if self.budget is not None:
                self.budget -= batch.moved
            if since > checkpoint and not batch.done:
                counted = self._count(plugin)
                if counted >= checkpoint:
                    raise _Stop(
                        "reported %d rows moved while %d were pending, and "
                        "%d still are: its migrate() reports rows it does "
                        "not move (or rows needing it are written faster "
                        "than it moves them)" % (since, checkpoint, counted))
                checkpoint, since = counted, 0
            if batch.scanned >= limit:
                sizer.record(batch.scanned, seconds)
            left = max(remaining - moved, 0)
            if batch.done:
                counted = self._count(plugin)
                if counted != left:
                    left = counted
                    self.transaction(lambda conn: vt.upsert(
                        conn, vt.DATA, plugin.name, rows_remaining=left))
            self.observer.batch(BatchEvent(
                plugin.name, limit, batch.scanned, batch.moved, seconds,
                self.moved, left))
            if batch.done:
                return moved, left
            cursor = batch.cursor
            if self.settings.batch_pause:
                self.sleep(self.settings.batch_pause)

    def _batch(self, plugin, limit, cursor, remaining):
        """One batch and its bookkeeping in one transaction."""
        def batch(conn):
            self._write_first(conn, plugin)
            done = plugin.migrate_batch(conn, limit, cursor)
            if not 0 <= done.moved <= limit:
                raise PluginError("a batch reported %d rows moved for a "
                                  "limit of %d" % (done.moved, limit))
            vt.add_rows(conn, plugin.name, done.moved,
                        cursor=_dump(done.cursor),
                        rows_remaining=max(remaining - done.moved, 0))
            journal.record_batch(conn, plugin.name, done.moved)
            return done
        return self.transaction(batch)

    def _write_first(self, conn, plugin):
        """Open a batch transaction: strict session, then a write (the
        migration's row), so that on SQLite the transaction takes the write
        lock first and waits for it (one that reads first fails at once
        when another connection writes meanwhile)."""
        self.support.prepare_data_session(conn)
        vt.upsert(conn, vt.DATA, plugin.name)

    def transaction(self, work):
        """``work(connection)`` in one transaction, retried on deadlocks,
        lock wait timeouts and SQLite's "database is locked" (a read that
        turns into a write while another connection writes)."""
        for attempt in range(RETRIES + 1):
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except sa_exc.DBAPIError as exc:
                if attempt == RETRIES or not self.support.is_transient(exc):
                    raise
                self.sleep(0.05 * 2 ** attempt)

    def _wait_for_load(self, name):
        waited, reason, ok = self.throttle.wait(self.engine)
        if reason:
            self.observer.throttled(name, reason, waited)
        if not ok:
            raise _Stop("throttled: %s for %.0fs; run `manage db migrate` "
                        "again when the load is lower" % (reason, waited),
                        go_on=True)

    def _count(self, plugin):
        with self.engine.connect() as conn:
            return count_pending(plugin, conn)

    def _recount(self, plugin):
        """The live count of a migration recorded as done, or its failed
        outcome when the count failed."""
        try:
            return self._count(plugin)
        except Exception as exc:  # a plugin's failure must not stop others
            self.moved = 0
            return self._finish(plugin, vt.FAILED, None, self._describe(exc))

    def _finish(self, plugin, state, remaining, detail, **values):
        with self.engine.begin() as conn:
            vt.upsert(conn, vt.DATA, plugin.name, state=state, detail=detail,
                      rows_remaining=remaining, **values)
        outcome = MigrationOutcome(plugin.name, state, self.moved, remaining,
                                   detail)
        self.observer.finished(outcome)
        return outcome

    def _describe(self, exc):
        return database.describe_exception(exc, self.url)


def count_pending(plugin, connection):
    """The rows a migration still has to move: a count, not a record.

    Raises what the plugin's ``pending()`` raises; a value that is not a
    whole number >= 0 is a :class:`~manage.exceptions.PluginError`."""
    value = plugin.pending(connection)
    try:
        count = int(value or 0)
    except (TypeError, ValueError):
        count = -1
    if count < 0:
        raise PluginError("pending() returned %r, not a row count" % (value,))
    return count


def _dump(cursor):
    return None if cursor is None else json.dumps(cursor)



