"""Data migrations: the plugin contract, the batched engine and the runner.

Plugins subclass :class:`DataMigration` (or, to walk a table by key with a
resumable cursor, :class:`KeysetMigration`, :class:`Backfill`,
:class:`SyncBackfill` or :class:`CopyBackfill`) and are registered as entry
points in the
``manage.data_migrations`` namespace.
"""

from manage.datamigration.backfill import (Backfill, CopyBackfill,
                                           KeysetMigration, SyncBackfill)
from manage.datamigration.base import Batch, DataMigration

__all__ = ["Backfill", "Batch", "CopyBackfill", "DataMigration",
           "KeysetMigration", "SyncBackfill"]
