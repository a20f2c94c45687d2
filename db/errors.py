"""Domain errors raised by ``db.commands`` and mapped by resolvers to typed union members.

DomainError
├── NotFoundError            the id is unknown, deleted, or another tenant's
├── ForbiddenError           the signed-in user may not do this
├── RecordValidationError    field errors: {field path: message}
├── EmailTakenError          another live customer has this primary email
├── HasAttachedRecordsError  delete refused while contacts/facilities/assets remain
├── DuplicateError           a unique name (user email, custom field key) is taken
├── NoPasswordError          a credential without a password cannot be revealed
├── RateLimitedError         too many reveals by this user in the last minute
└── DecryptionFailedError    a stored secret does not decrypt (altered data or missing key)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID


class DomainError(Exception):
    """An expected failure a client can act on."""


class NotFoundError(DomainError):
    """The record does not exist for this tenant (or is deleted)."""

    def __init__(self, entity: str, record_id: UUID | str) -> None:
        super().__init__(f"{entity} {record_id} not found")
        self.entity = entity
        self.record_id = record_id


class ForbiddenError(DomainError):
    """The user lacks the role or capability for this operation."""


class RecordValidationError(DomainError):
    """One or more fields are invalid."""

    def __init__(self, field_errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in field_errors.items()))
        self.field_errors = dict(field_errors)


# The field error of a primary email another live customer holds, where a typed
# EmailTaken result cannot be given (push outcomes, resolveConflict).
EMAIL_TAKEN = "is already taken by another customer"


class EmailTakenError(DomainError):
    """The primary email belongs to another live customer of the tenant."""

    def __init__(self, email: str, customer_id: UUID | None) -> None:
        super().__init__(f"another customer already uses {email}")
        self.email = email
        self.customer_id = customer_id


class HasAttachedRecordsError(DomainError):
    """Delete refused because live records are still attached; archive instead."""

    def __init__(self, kinds: Sequence[str]) -> None:
        super().__init__(
            "this record still has " + ", ".join(kinds) + " attached: archive it instead,"
            " or delete those first"
        )
        self.kinds = list(kinds)


class DuplicateError(DomainError):
    """A value that must be unique is already used."""


class NoPasswordError(DomainError):
    """The credential has no password to reveal."""

    def __init__(self, credential_id: UUID) -> None:
        super().__init__("this credential has no password to reveal")
        self.credential_id = credential_id


class RateLimitedError(DomainError):
    """Too many attempts (reveals, logins) recently; try again later."""

    def __init__(
        self, limit: int, retry_after_seconds: int, what: str = "password reveals per minute"
    ) -> None:
        super().__init__(f"at most {limit} {what}: try again in {retry_after_seconds} seconds")
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds


class DecryptionFailedError(DomainError):
    """The stored secret could not be decrypted; nothing was revealed or logged."""


class EditConflictError(DomainError):
    """An edit with a base version changed fields the server also changed since."""

    def __init__(
        self, conflicts: Sequence[tuple[str, object, object]], server_version: Mapping[str, int]
    ) -> None:
        fields = ", ".join(c[0] for c in conflicts)
        super().__init__(f"changed meanwhile by someone else: {fields}; reload and edit again")
        self.conflicts = list(conflicts)
        self.server_version = dict(server_version)


# SQLSTATEs of a transaction PostgreSQL aborted for what other transactions did at the same
# time (deadlock detected, serialization failure): nothing about the request is wrong, and
# running the same transaction again succeeds.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, from SQLAlchemy's wrapper or the driver's own."""
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None), exc, exc.__cause__):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_transient(exc: BaseException) -> bool:
    """The exception aborted the transaction for a reason that a retry of the whole
    transaction removes."""
    return sqlstate(exc) in _TRANSIENT_SQLSTATES
