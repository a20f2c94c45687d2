"""Helpers for user text inside SQL patterns."""

from __future__ import annotations


def escape_like(text: str) -> str:
    """Escape LIKE wildcards so user text matches literally (escape char: backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
