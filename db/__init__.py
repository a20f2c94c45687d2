"""Data layer: tables, engine, tenant-scoped transactions, migrations, queries, writes."""
