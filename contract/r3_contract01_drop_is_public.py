"""Release 3: drop projects.is_public and its sync.

Revision ID: r3_contract01
"""
from data_migrations import projects_visibility
from manage.ops import drop_column, drop_column_sync

revision = "r3_contract01"
down_revision = "r2_contract01"
branch_labels = None
depends_on = "r3_expand01"


def upgrade():
    drop_column_sync(projects_visibility.SYNC)
    drop_column("projects", "is_public")
