"""Data migrations: the plugin contract and the runner.

Plugins subclass :class:`DataMigration` and are registered as entry points in
the ``manage.data_migrations`` namespace.
"""

from manage.datamigration.backfill import Backfill, SyncBackfill
from manage.datamigration.base import DataMigration

__all__ = ["Backfill", "DataMigration", "SyncBackfill"]
