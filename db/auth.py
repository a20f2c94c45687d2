"""Passwords (argon2) and bearer tokens (HS256 JWT with expiry and a revocation epoch).

The primitives only: no HTTP. The resolvers verify a request's token (``resolvers.context``)
and issue one at sign-in; the server reads the header (``server.auth.bearer_token``) and
verifies tokens on the compiled-read path and on WebSocket connections; the CLI hashes
passwords.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Verifying against this when the email is unknown keeps sign-in timing uniform.
_DUMMY_HASH = _hasher.hash("fieldsync-timing-equaliser")
ALGORITHM = "HS256"


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; an unknown user (None) still costs one verification."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class TokenClaims:
    """Who a bearer token speaks for."""

    org_id: UUID
    user_id: UUID
    epoch: int
    expires_at: datetime


class InvalidTokenError(Exception):
    """The token is malformed, forged or expired."""


def issue_token(
    secret: str, *, org_id: UUID, user_id: UUID, epoch: int, ttl_seconds: int
) -> tuple[str, datetime]:
    """A signed token and its expiry time."""
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=ttl_seconds)
    payload = {
        "sub": str(user_id),
        "org": str(org_id),
        "epoch": epoch,
        "iat": int(now.timestamp()),
        "exp": int(expires.timestamp()),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM), expires


# Tokens whose signature this process verified, with their claims: verifying an HMAC
# signature, decoding and validating the claims took more Python than the rest of reading
# a customer's detail page. Expiry is checked at every use; revocation (token epoch,
# deactivation) is checked against the user row on every request anyway.
_VERIFIED: dict[tuple[str, str], TokenClaims] = {}
_VERIFIED_MAX = 4096


def read_token(secret: str, token: str) -> TokenClaims:
    """Verify signature and expiry; raise :class:`InvalidTokenError` otherwise."""
    claims = _VERIFIED.get((secret, token))
    if claims is None:
        claims = _verify(secret, token)
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[(secret, token)] = claims
    elif claims.expires_at.timestamp() <= time.time():
        raise InvalidTokenError("Signature has expired")
    return claims


def _verify(secret: str, token: str) -> TokenClaims:
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "org"]}
        )
        return TokenClaims(
            org_id=UUID(payload["org"]),
            user_id=UUID(payload["sub"]),
            epoch=int(payload.get("epoch", 0)),
            expires_at=datetime.fromtimestamp(payload["exp"], UTC),
        )
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        raise InvalidTokenError(str(exc)) from exc


def still_valid(user: Mapping[str, Any] | None, claims: TokenClaims) -> bool:
    """Whether the ``users`` row read for a verified token still honours it: the user
    exists, is active and has not revoked the token's epoch (checked on every request)."""
    return user is not None and bool(user["active"]) and user["token_epoch"] == claims.epoch
