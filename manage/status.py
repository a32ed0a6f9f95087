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
class SyncCheck:
    """One column sync or copy, checked live (``version``, ``check``).

    ``installed``: its triggers are there as expand made them (None: no
    triggers recorded, as after an offline ``sync``); ``problem`` says what
    is wrong with them.  ``rows_disagreeing``: rows whose two sides do not
    agree, byte for byte (None: not counted, the expand branch is not at
    its head or no pending contract revision removes it; see ``error``
    when the count failed), with up to five of their primary keys.
    """
    name: str
    kind: str                        # sync | copy
    table: str
    columns: str                     # "users.name -> display_name"
    revision: Optional[str] = None   # the expand revision that declared it
    installed: Optional[bool] = None
    problem: Optional[str] = None
    rows_disagreeing: Optional[int] = None
    sample_keys: List = dataclasses.field(default_factory=list)
    error: Optional[str] = None
    #: The trigger group it belongs to (several syncs of a table share
    #: one); None when no triggers are recorded.
    group: Optional[str] = None

    @property
    def ok(self):
        return self.installed is not False and not self.rows_disagreeing \
            and self.error is None

    @property
    def summary(self):
        """One line: installed or not, and the rows that disagree."""
        if self.installed is False:
            state = "not installed (%s)" % self.problem
        elif self.installed:
            state = "installed"
        else:
            state = "no triggers"
        if self.error is not None:
            rows = "rows not verified: %s" % self.error
        elif self.rows_disagreeing is None:
            rows = "rows not counted"
        else:
            rows = "%d row(s) disagree" % self.rows_disagreeing
            if self.sample_keys:
                rows += " (keys %s%s)" % (", ".join(
                    str(list(k)) if isinstance(k, (list, tuple)) else str(k)
                    for k in self.sample_keys), ", ..." if
                    self.rows_disagreeing > len(self.sample_keys) else "")
        return "%s %s (%s): %s, %s" % (self.kind, self.name, self.columns,
                                       state, rows)


@dataclasses.dataclass
class CompositeVersion:
    expand: BranchState
    contract: BranchState
    data_migrations: List[DataMigrationState]
    #: Interrupted or failed steps from the journal (oldest first).
    steps: List[StepState] = dataclasses.field(default_factory=list)
    #: The column syncs and copies, checked live (version and check only).
    syncs: List[SyncCheck] = dataclasses.field(default_factory=list)

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
        status = self.status
        broken = [s for s in self.syncs if s.installed is False]
        if broken and status in (Status.NEEDS_MIGRATE,
                                 Status.NEEDS_CONTRACT):
            return ("migrate and contract would refuse: %s %s on table %s "
                    "is not installed as expand made it (%s); run `manage "
                    "db expand` to re-create it" % (
                        broken[0].kind, broken[0].group or broken[0].name,
                        broken[0].table,
                        broken[0].problem))
        disagree = [s for s in self.syncs if s.rows_disagreeing or s.error]
        if disagree and status == Status.NEEDS_CONTRACT:
            return ("contract would refuse: %s; make each row's two sides "
                    "agree, then run `manage db contract`" % "; ".join(
                        s.summary for s in disagree))
        return NEXT_STEP[status]

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
            "syncs": [dataclasses.asdict(s) for s in self.syncs],
        }
