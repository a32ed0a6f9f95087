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
class CompositeVersion:
    expand: BranchState
    contract: BranchState
    data_migrations: List[DataMigrationState]

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
        }
