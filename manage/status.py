"""The composite version of a database and what to run next."""

import dataclasses
import enum
from typing import List, Optional

from manage import version_table as vt


class Status(enum.Enum):
    CURRENT = "current"
    NEEDS_EXPAND = "expand"
    NEEDS_MIGRATE = "migrate"
    NEEDS_CONTRACT = "contract"


NEXT_STEP = {
    Status.CURRENT: "database is current: nothing to do",
    Status.NEEDS_EXPAND: "expand needed: run `manage db expand`",
    Status.NEEDS_MIGRATE: "data migrations pending: run `manage db migrate`",
    Status.NEEDS_CONTRACT: "contract needed: once every node runs the new "
                           "code, run `manage db contract`",
}


@dataclasses.dataclass
class BranchState:
    name: str
    current: Optional[str]
    head: Optional[str]
    pending: List[str]

    @property
    def at_head(self):
        return not self.pending


@dataclasses.dataclass
class DataMigrationState:
    name: str
    state: str
    rows_done: int = 0
    rows_remaining: Optional[int] = None
    description: str = ""
    detail: Optional[str] = None

    @property
    def done(self):
        return self.state == vt.DONE


@dataclasses.dataclass
class StepState:
    """A step the journal shows as interrupted or failed."""
    phase: str                   # expand | migrate | contract
    name: str                    # a revision or a data migration
    state: str                   # started | failed
    command: Optional[str] = None   # the `manage db` command that ran it
    host: Optional[str] = None
    pid: Optional[int] = None
    alive: Optional[bool] = None    # its process runs: True, gone: False
    error: Optional[str] = None
    rows_done: int = 0
    started_at: Optional[str] = None

    @property
    def condition(self):
        if self.state == "failed":
            return "failed"
        return {True: "running", False: "interrupted"}.get(
            self.alive, "interrupted or still running")

    @property
    def what(self):
        if self.phase == "migrate":
            return "data migration %s" % self.name
        return "%s revision %s" % (self.phase, self.name)

    @property
    def advice(self):
        """One line: what happened and what to run next."""
        rerun = "`manage db %s`" % (self.command or self.phase)
        who = "pid %s on host %s" % (self.pid, self.host) if self.pid \
            else "an earlier run"
        done = ", %d rows moved" % self.rows_done if self.rows_done else ""
        if self.condition == "failed":
            return "%s failed: %s; fix the cause, then run %s again" % (
                self.what, self.error or "unknown error", rerun)
        if self.condition == "running":
            return "%s is running (%s%s): wait for it to finish" % (
                self.what, who, done)
        if self.condition == "interrupted":
            return ("%s was interrupted (%s%s): run %s again to resume; it "
                    "continues from what was applied" % (
                        self.what, who, done, rerun))
        return ("%s did not finish (%s%s): if that run is gone, run %s "
                "again to resume" % (self.what, who, done, rerun))


@dataclasses.dataclass
class CompositeVersion:
    expand: BranchState
    contract: BranchState
    data_migrations: List[DataMigrationState]
    #: Interrupted or failed steps from the journal (oldest first).
    steps: List[StepState] = dataclasses.field(default_factory=list)

    @property
    def status(self):
        if not self.expand.at_head:
            return Status.NEEDS_EXPAND
        if any(not d.done for d in self.data_migrations):
            return Status.NEEDS_MIGRATE
        if not self.contract.at_head:
            return Status.NEEDS_CONTRACT
        return Status.CURRENT

    @property
    def next_step(self):
        if self.steps:
            return self.steps[0].advice
        return NEXT_STEP[self.status]

    @property
    def pending_data_migrations(self):
        return [d for d in self.data_migrations if not d.done]

    def to_dict(self):
        return {
            "status": self.status.value,
            "next": self.next_step,
            "branches": {b.name: {"current": b.current, "head": b.head,
                                  "pending": b.pending}
                         for b in (self.expand, self.contract)},
            "data_migrations": [dataclasses.asdict(d)
                                for d in self.data_migrations],
            "steps": [dict(dataclasses.asdict(s), condition=s.condition,
                           advice=s.advice) for s in self.steps],
        }
