"""Typed, expected failures returned as union members, with a stable code each."""

from __future__ import annotations

import enum

import strawberry

from db.errors import (
    DecryptionFailedError,
    DomainError,
    DuplicateError,
    EditConflictError,
    EmailTakenError,
    ForbiddenError,
    HasAttachedRecordsError,
    NoPasswordError,
    NotFoundError,
    RateLimitedError,
    RecordValidationError,
)
from schema.encoding import ObjectSpec
from schema.scalars import JSON, VersionVector
from sync.validation import camel


@strawberry.enum(description="Stable codes of expected failures; safe to switch on.")
class ErrorCode(enum.Enum):
    """Error codes of union error members."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    VALIDATION_FAILED = strawberry.enum_value(
        "VALIDATION_FAILED",
        description="Some input fields are invalid (ValidationError, see `fieldErrors`); nothing"
        " was written.",
    )
    NOT_FOUND = strawberry.enum_value(
        "NOT_FOUND",
        description="No such record for this tenant, or it was deleted, or the id is malformed"
        " (NotFound).",
    )
    EMAIL_TAKEN = strawberry.enum_value(
        "EMAIL_TAKEN",
        description="Another live customer already has this primary email (EmailTaken).",
    )
    HAS_ATTACHED_RECORDS = strawberry.enum_value(
        "HAS_ATTACHED_RECORDS",
        description="Delete refused while records are attached; archive instead"
        " (HasAttachedRecords).",
    )
    FORBIDDEN = strawberry.enum_value(
        "FORBIDDEN",
        description="The signed-in user's role or capabilities do not allow this (Forbidden).",
    )
    INVALID_CREDENTIALS = strawberry.enum_value(
        "INVALID_CREDENTIALS",
        description="Sign-in failed: wrong email or password, or the account is inactive.",
    )
    DUPLICATE = strawberry.enum_value(
        "DUPLICATE", description="A value that must be unique is already used (Duplicate)."
    )
    NO_PASSWORD = strawberry.enum_value(
        "NO_PASSWORD", description="The credential has no password to reveal (NoPassword)."
    )
    RATE_LIMITED = strawberry.enum_value(
        "RATE_LIMITED",
        description="Too many attempts recently; wait `retryAfterSeconds` (RateLimited).",
    )
    DECRYPTION_FAILED = strawberry.enum_value(
        "DECRYPTION_FAILED",
        description="A stored secret could not be decrypted; nothing was revealed"
        " (DecryptionFailed).",
    )
    EDIT_CONFLICT = strawberry.enum_value(
        "EDIT_CONFLICT",
        description="Someone changed the same fields since `baseVersion`; nothing was written"
        " (EditConflict).",
    )


@strawberry.interface(description="Every expected failure has a code and a readable message.")
class UserError:
    """Common fields of error union members."""

    code: ErrorCode = strawberry.field(description="Stable code.")
    message: str = strawberry.field(description="What went wrong and what to do, for people.")


@strawberry.type(description="One invalid input field.")
class FieldError:
    """A field path (camelCase, e.g. `phones[0].number`) and what is wrong with it."""

    field: str = strawberry.field(description="Path of the input field.")
    message: str = strawberry.field(description="What is wrong with it.")


# A FieldError from a (field, message) item of a push outcome's field errors.
FIELD_ERROR = ObjectSpec(name="FieldError", fields={"field": "v[0]", "message": "v[1]"})


@strawberry.type(description="Some fields are invalid; nothing was written.")
class ValidationError(UserError):
    """Field-level problems."""

    field_errors: list[FieldError] = strawberry.field(description="Each invalid field.")


@strawberry.type(description="No such record for this tenant (or it was deleted).")
class NotFound(UserError):
    """Unknown id."""

    id: strawberry.ID = strawberry.field(description="The id that was not found.")


@strawberry.type(description="Another live customer already has this primary email.")
class EmailTaken(UserError):
    """Primary emails are unique per tenant, case-insensitive."""

    # Always set; nullable like Customer.email, its neighbour in CustomerResult.
    email: str | None = strawberry.field(
        description="The email that is taken (always set; nullable only to agree with"
        " `Customer.email` in the same union)."
    )


@strawberry.type(description="Delete refused while records are attached; archive instead.")
class HasAttachedRecords(UserError):
    """Attached records block delete."""

    attached: list[str] = strawberry.field(description="Kinds still attached, e.g. `contacts`.")


@strawberry.type(description="The signed-in user may not do this.")
class Forbidden(UserError):
    """Missing role or capability."""


@strawberry.type(description="Email or password is wrong, or the account is inactive.")
class InvalidCredentials(UserError):
    """Sign-in failed."""


@strawberry.type(description="A value that must be unique is already used.")
class Duplicate(UserError):
    """Unique constraint."""


@strawberry.type(description="The credential has no password to reveal.")
class NoPassword(UserError):
    """Nothing to reveal."""


@strawberry.type(description="Too many requests of this kind recently; try again later.")
class RateLimited(UserError):
    """A rate limit was hit; nothing was done."""

    retry_after_seconds: int = strawberry.field(description="Seconds until trying again helps.")


@strawberry.type(
    description="The stored secret could not be decrypted (altered data, or its master key"
    " is not configured); nothing was revealed. Tell an administrator."
)
class DecryptionFailed(UserError):
    """Decryption failed."""


@strawberry.type(description="A field both sides changed.")
class FieldConflict:
    """Both values of one field."""

    field: str = strawberry.field(description="Field name (camelCase).")
    server_value: JSON | None = strawberry.field(description="The server's value.")
    client_value: JSON | None = strawberry.field(description="Your value (null in a delete).")


# A FieldConflict from a stored conflict's field ({field, serverValue, clientValue}, the
# field named as the tables name it), as push outcomes and SyncConflict rows hold them.
FIELD_CONFLICT = ObjectSpec(
    name="FieldConflict",
    fields={
        "field": "camel(v['field'])",
        "serverValue": "v['serverValue']",
        "clientValue": "v['clientValue']",
    },
    names={"camel": camel},
)


@strawberry.type(
    description="Your edit started from an older version and someone changed the same fields"
    " since: nothing was written; reload (serverVersion) and edit again."
)
class EditConflict(UserError):
    """Online edit conflict (edits with `baseVersion`)."""

    fields: list[FieldConflict] = strawberry.field(description="Fields changed on both sides.")
    server_version: VersionVector = strawberry.field(description="The record's current version.")


def forbidden(message: str = "you are not allowed to do this") -> Forbidden:
    """A Forbidden member with a message."""
    return Forbidden(code=ErrorCode.FORBIDDEN, message=message)


def not_found(record_id: str, message: str | None = None) -> NotFound:
    """A NotFound member for an id as the client sent it."""
    return NotFound(
        code=ErrorCode.NOT_FOUND,
        message=message or f"{record_id} not found",
        id=strawberry.ID(record_id),
    )


def invalid(field_errors: dict[str, str]) -> ValidationError:
    """A ValidationError member from {field: message}."""
    return ValidationError(
        code=ErrorCode.VALIDATION_FAILED,
        message="Some fields are invalid: "
        + "; ".join(f"{k} {v}" for k, v in field_errors.items()),
        field_errors=[FieldError(field=k, message=v) for k, v in field_errors.items()],
    )


def error_from(exc: DomainError, client_id: str | None = None) -> UserError:
    """The union member for a domain error; ``client_id`` is the id as the client sent it."""
    if isinstance(exc, RecordValidationError):
        return invalid(exc.field_errors)
    if isinstance(exc, NotFoundError):
        return not_found(client_id or str(exc.record_id), str(exc))
    if isinstance(exc, EmailTakenError):
        return EmailTaken(code=ErrorCode.EMAIL_TAKEN, message=str(exc), email=exc.email)
    if isinstance(exc, HasAttachedRecordsError):
        return HasAttachedRecords(
            code=ErrorCode.HAS_ATTACHED_RECORDS, message=str(exc), attached=exc.kinds
        )
    if isinstance(exc, ForbiddenError):
        return forbidden(str(exc) or "you are not allowed to do this")
    if isinstance(exc, EditConflictError):
        return EditConflict(
            code=ErrorCode.EDIT_CONFLICT,
            message=str(exc),
            fields=[
                FieldConflict(field=camel(f), server_value=JSON(server), client_value=JSON(client))
                for f, server, client in exc.conflicts
            ],
            server_version=VersionVector(exc.server_version),
        )
    if isinstance(exc, DuplicateError):
        return Duplicate(code=ErrorCode.DUPLICATE, message=str(exc))
    if isinstance(exc, NoPasswordError):
        return NoPassword(code=ErrorCode.NO_PASSWORD, message=str(exc))
    if isinstance(exc, RateLimitedError):
        return RateLimited(
            code=ErrorCode.RATE_LIMITED,
            message=str(exc),
            retry_after_seconds=exc.retry_after_seconds,
        )
    if isinstance(exc, DecryptionFailedError):
        return DecryptionFailed(code=ErrorCode.DECRYPTION_FAILED, message=str(exc))
    raise exc
