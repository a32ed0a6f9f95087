"""The data-migration plugin contract."""

import abc


class DataMigration(abc.ABC):
    """Moves existing rows to the new schema, a bounded batch at a time.

    A plugin is registered as an entry point whose name is the plugin's
    ``name``.  The runner calls :meth:`migrate` in a fresh transaction per
    batch until it moves nothing, then asks :meth:`pending` whether anything
    is left; it records the state and row counts in the composite version
    table.  Both methods must be safe to call again at any time: a row that
    is already migrated is never counted as pending again.
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
