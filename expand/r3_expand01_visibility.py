"""Release 3: projects.is_public becomes projects.visibility.

Revision ID: r3_expand01
"""
import sqlalchemy as sa

from data_migrations import projects_visibility
from manage.ops import add_column, sync_columns

revision = "r3_expand01"
down_revision = "r2_expand01"
branch_labels = None
depends_on = None


def upgrade():
    add_column("projects", sa.Column("visibility", sa.String(16),
                                     nullable=True))
    sync_columns(projects_visibility.SYNC)
