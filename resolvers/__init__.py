"""Thin query, mutation and subscription functions: read context, call db/ or sync/, shape."""
