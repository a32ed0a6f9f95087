"""What the runner tells an observer while it works; the library never prints.

The runner calls an :class:`Observer`'s methods as data migrations start,
finish batches, wait for load to drop and finish.  The CLI supplies one that
draws a progress bar or writes log lines; tests and library users may pass a
:class:`Recorder`.  :class:`Tracker` turns the events into rows per second
and time left.
"""

import dataclasses
import time
from typing import List, Optional


@dataclasses.dataclass
class BatchEvent:
    name: str
    limit: int           # the batch size the runner asked for
    scanned: int         # rows examined
    moved: int           # rows changed
    seconds: float       # duration of the batch transaction
    rows_done: int       # moved in this run so far
    rows_remaining: Optional[int]  # estimate: pending count less moved


class Observer:
    """No-op base: override what you need."""

    def started(self, name, rows_remaining):
        """A migration starts; ``rows_remaining`` is the pending count."""

    def batch(self, event):
        """A batch committed."""

    def throttled(self, name, reason, seconds):
        """The runner waited ``seconds`` because of ``reason``."""

    def finished(self, outcome):
        """A migration ended (a MigrationOutcome)."""


class Recorder(Observer):
    """Keeps every event, in order."""

    def __init__(self):
        self.events = []

    def started(self, name, rows_remaining):
        self.events.append(("started", name, rows_remaining))

    def batch(self, event):
        self.events.append(("batch", event))

    def throttled(self, name, reason, seconds):
        self.events.append(("throttled", name, reason, seconds))

    def finished(self, outcome):
        self.events.append(("finished", outcome))

    @property
    def batches(self) -> List[BatchEvent]:
        return [e[1] for e in self.events if e[0] == "batch"]


class Tracker:
    """Rows per second and time left of one migration, from its events."""

    def __init__(self, name, rows_remaining, clock=time.monotonic):
        self.name = name
        self.total = rows_remaining
        self.clock = clock
        self.start = clock()
        self.rows_done = 0
        self.rows_remaining = rows_remaining

    def update(self, event):
        self.rows_done = event.rows_done
        self.rows_remaining = event.rows_remaining

    @property
    def elapsed(self):
        return max(self.clock() - self.start, 1e-9)

    @property
    def rate(self):
        return self.rows_done / self.elapsed

    @property
    def fraction(self):
        if self.rows_remaining is None:
            return None
        whole = self.rows_done + self.rows_remaining
        return 1.0 if whole == 0 else self.rows_done / whole

    @property
    def seconds_left(self):
        if self.rows_remaining is None or self.rate <= 0:
            return None
        return self.rows_remaining / self.rate


def format_seconds(seconds):
    """``1:02:03``, ``2:03`` or ``?``."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return ("%d:%02d:%02d" % (hours, minutes, secs) if hours
            else "%d:%02d" % (minutes, secs))
