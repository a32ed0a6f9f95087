"""Running data migrations in short transactions, recording their progress.

Each batch runs in its own transaction together with the update of the
migration's row in the composite version table, so the recorded count always
matches what was committed.  A failing migration is recorded as failed and
the others still run.
"""

import dataclasses
import logging
from typing import List, Optional

from sqlalchemy import exc as sa_exc

from manage import database, version_table as vt

LOG = logging.getLogger(__name__)


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


class Runner:
    def __init__(self, engine, plugins, batch_size, connection_url):
        self.engine = engine
        self.plugins = plugins
        self.batch_size = batch_size
        self.url = connection_url

    def run(self, max_count=None):
        with self.engine.begin() as conn:
            vt.ensure(conn)
            recorded = vt.read(conn, vt.DATA)
        budget = max_count
        outcomes = []
        for plugin in self.plugins:
            row = recorded.get(plugin.name)
            if row is not None and row["state"] == vt.DONE:
                outcomes.append(MigrationOutcome(plugin.name, vt.DONE, 0, 0))
                continue
            if budget is not None and budget <= 0:
                outcomes.append(MigrationOutcome(
                    plugin.name, row["state"] if row else vt.PENDING))
                continue
            outcome = self._run_one(plugin, budget)
            outcomes.append(outcome)
            if budget is not None:
                budget -= outcome.rows_moved
        return MigrateResult(outcomes)

    def _run_one(self, plugin, budget):
        name = plugin.name
        with self.engine.begin() as conn:
            vt.upsert(conn, vt.DATA, name, state=vt.RUNNING, detail=None)
        moved_total = 0
        try:
            while budget is None or moved_total < budget:
                limit = self.batch_size if budget is None else min(
                    self.batch_size, budget - moved_total)
                with self.engine.begin() as conn:
                    moved = int(plugin.migrate(conn, limit) or 0)
                    if moved < 0 or moved > limit:
                        raise ValueError("migrate() reported %d rows for a "
                                         "limit of %d" % (moved, limit))
                    vt.add_rows(conn, name, moved)
                moved_total += moved
                if moved == 0:
                    break
            with self.engine.connect() as conn:
                remaining = int(plugin.pending(conn) or 0)
        except Exception as exc:  # a plugin's failure must not stop others
            message = self._describe(exc)
            LOG.error("data migration %s failed: %s", name, message)
            LOG.debug("data migration %s failed", name, exc_info=True)
            with self.engine.begin() as conn:
                vt.upsert(conn, vt.DATA, name, state=vt.FAILED,
                          detail=message)
            return MigrationOutcome(name, vt.FAILED, moved_total, None,
                                    message)
        if remaining == 0:
            state, detail = vt.DONE, None
        elif budget is not None and moved_total >= budget:
            state, detail = vt.PENDING, None
        else:
            state = vt.FAILED
            detail = ("made no progress: migrate() moved no rows while "
                      "pending() reports %d" % remaining)
        with self.engine.begin() as conn:
            vt.upsert(conn, vt.DATA, name, state=state,
                      rows_remaining=remaining, detail=detail)
        return MigrationOutcome(name, state, moved_total, remaining, detail)

    def _describe(self, exc):
        if isinstance(exc, sa_exc.DBAPIError):
            return database.describe_dbapi_error(exc, self.url)
        return database.redact_text("%s: %s" % (type(exc).__name__, exc),
                                    self.url)
