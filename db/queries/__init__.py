"""Query functions by domain: async, take a tenant-scoped connection, return plain rows."""
