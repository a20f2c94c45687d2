"""Helpers for user text inside SQL patterns."""

from __future__ import annotations


def escape_like(text: str) -> str:
    """Escape LIKE wildcards so user text matches literally (escape char: backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def holds_nul(text: str) -> bool:
    """PostgreSQL text cannot hold NUL (sending one fails the query), so a filter value with
    one matches nothing: callers add `false()` instead of sending it."""
    return "\x00" in text
