"""Validated, transactional writes by domain; each raises ``db.errors`` on expected failures."""
