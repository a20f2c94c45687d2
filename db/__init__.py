"""Data layer: tables, engine, tenant-scoped transactions, migrations, queries, writes, and
the password and token primitives (``db.auth``) and credential encryption (``db.crypto``)."""
