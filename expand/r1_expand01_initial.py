"""Release 1: the initial schema.

Revision ID: r1_expand01
"""
import sqlalchemy as sa

from manage.ops import create_table

revision = "r1_expand01"
down_revision = None
branch_labels = ("expand",)
depends_on = None


def upgrade():
    create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        # Renamed to display_name in release 2.  Nullable: during a rolling
        # upgrade new code stops writing it and the sync triggers fill it.
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("email", sa.String(255), nullable=False),
        # JSON text {"theme": ..., "language": ...}; columns in release 3.
        sa.Column("settings", sa.Text, nullable=True),
        # Moves to the user_addresses table in release 3.
        sa.Column("address", sa.String(255), nullable=True),
    )
    create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"),
                  nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        # Becomes the multi-valued projects.visibility in release 3.
        sa.Column("is_public", sa.Boolean, nullable=True),
    )
