"""The data-migration plugin contract."""

import abc
import dataclasses
from typing import Any


@dataclasses.dataclass
class Batch:
    """What one batch did, as :meth:`DataMigration.migrate_batch` reports it.

    ``moved`` rows were changed (they count against ``--max-count``),
    ``scanned`` rows were examined (they drive the adaptive batch size),
    ``cursor`` is where the next batch starts (any JSON value; the runner
    saves it with the batch) and ``done`` says the pass reached its end.
    """

    moved: int
    scanned: int
    cursor: Any
    done: bool


class DataMigration(abc.ABC):
    """Moves existing rows to the new schema, a bounded batch at a time.

    A plugin is registered as an entry point whose name is the plugin's
    ``name``.  The runner counts :meth:`pending` rows, then calls
    :meth:`migrate_batch` in a fresh, short transaction per batch until a
    pass is done, and counts again.  Each batch commits together with the
    migration's row in the composite version table (rows moved and the
    cursor), so a killed run resumes where it stopped.

    A simple plugin only implements :meth:`pending` and :meth:`migrate`;
    both must be safe to call again at any time: a row that is already
    migrated is never counted as pending again.  Plugins that walk a table
    by key subclass :class:`manage.datamigration.backfill.KeysetMigration`
    instead, which implements the cursor hooks.
    """

    #: Unique name; must equal the entry point name.
    name = None
    #: One line for operators (shown by ``manage db version``).
    description = ""
    #: The expand revision that created what this migration fills.
    after_revision = None

    @abc.abstractmethod
    def pending(self, connection):
        """How many rows still need migrating (0 when none; may estimate)."""

    @abc.abstractmethod
    def migrate(self, connection, limit):
        """Move at most ``limit`` rows; return how many were moved."""

    # -- cursor-aware hooks (optional) -------------------------------------
    def begin(self, connection, cursor):
        """Start a pass, or resume one from a saved ``cursor`` (None for a
        fresh pass); return the cursor of the first batch."""
        return cursor

    def migrate_batch(self, connection, limit, cursor):
        """Run one batch of at most ``limit`` rows from ``cursor``.

        The default calls :meth:`migrate`; the pass ends when a batch moves
        nothing.
        """
        moved = int(self.migrate(connection, limit) or 0)
        return Batch(moved, moved, cursor, moved == 0)
