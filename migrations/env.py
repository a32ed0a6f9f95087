"""Alembic environment of the bundled migration repository."""

from alembic import context

from manage import alembic_env

alembic_env.run_migrations(context)
