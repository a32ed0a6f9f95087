"""Alembic environment of the bundled migration repository.

Whether manage or plain Alembic drives it, :mod:`manage.alembic_env` runs
it with manage's guards (plain Alembic: contract, downgrade and stamp
refused, expand guarded as ``manage db expand`` runs it).
"""

from alembic import context

from manage import alembic_env

alembic_env.run_migrations(context)
