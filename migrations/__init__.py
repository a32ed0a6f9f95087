"""The bundled migration repository's Alembic environment."""
