"""The sync engine, pure where possible."""
