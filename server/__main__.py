"""``python -m server`` runs the CLI (same as the ``fieldsync`` script)."""

from server.cli import app

app()
