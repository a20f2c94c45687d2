"""The HTTP side of sign-in: the bearer token of an ``Authorization`` header.

Verifying and issuing tokens and hashing passwords are ``db.auth``'s (the resolvers use
them too).
"""

from __future__ import annotations


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
