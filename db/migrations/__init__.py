"""Alembic migrations; applied by ``fieldsync migrate`` and at ``fieldsync serve`` start."""
