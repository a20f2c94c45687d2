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


def from_global_id(global_id: str, expected: str | None = None) -> tuple[str, UUID]:
    """Decode a global id into (type name, uuid); check the type when ``expected`` is given."""
    try:
        type_name, _, raw = base64.b64decode(global_id, validate=True).decode().partition(":")
        record_id = UUID(raw)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidIdError(f"{global_id!r} is not a valid id") from exc
    if expected is not None and type_name != expected:
        raise InvalidIdError(f"{global_id!r} is not a {expected} id")
    return type_name, record_id
