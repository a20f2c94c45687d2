"""Relay global ids and the Node interface."""

from __future__ import annotations

import base64
import binascii
from uuid import UUID

import strawberry


@strawberry.interface(
    description="An object with a globally unique id; fetch any with `node(id:)`."
)
class Node:
    """Relay's Node interface."""

    id: strawberry.ID = strawberry.field(description="Global id: opaque, stable, unique.")


def to_global_id(type_name: str, record_id: UUID) -> strawberry.ID:
    """Encode ``Type:uuid`` as an opaque base64 id."""
    return strawberry.ID(base64.b64encode(f"{type_name}:{record_id}".encode()).decode())


class InvalidIdError(ValueError):
    """The id is not a global id of the expected type."""


def bare_uuid(value: str) -> UUID | None:
    """``value`` as a bare record uuid (the sync API's ids), or None when it is not one."""
    # Callers try the global id first; neither form is ever taken for the other (a uuid's
    # dashes are not base64, and 32 hex digits decode to no "Type:uuid").
    try:
        return UUID(value)
    except ValueError:
        return None


def from_global_id(global_id: str, expected: str | None = None) -> tuple[str, UUID]:
    """Decode a global id into (type name, uuid); check the type when ``expected`` is given.

    With ``expected``, the record's bare uuid is taken as well (``recordId``, the sync
    API's ids): a client holding pulled records needs no second id format. Its type is
    then ``expected``; whether such a record exists is the caller's lookup, as for any id.
    """
    try:
        type_name, _, raw = base64.b64decode(global_id, validate=True).decode().partition(":")
        record_id = UUID(raw)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        bare = None if expected is None else bare_uuid(global_id)
        if expected is None or bare is None:
            raise InvalidIdError(f"{global_id!r} is not a valid id") from exc
        return expected, bare
    if expected is not None and type_name != expected:
        raise InvalidIdError(f"{global_id!r} is not a {expected} id")
    return type_name, record_id
