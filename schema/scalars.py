"""Custom scalars: each described (its wire form, as a frontend developer needs it) and,
where a specification exists, pointing at it with ``@specifiedBy``.

Registered in the schema config (``SCALAR_MAP``): VersionVector, and for strawberry's own
Date, DateTime and Upload definitions the same parsing and serialising with a description
and a specification URL. Clients map them to TypeScript with clients/frontend/scalars.json.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NewType

import strawberry
from graphql import GraphQLError, ValueNode, value_from_ast_untyped
from strawberry.file_uploads import Upload
from strawberry.file_uploads.scalars import UploadDefinition
from strawberry.scalars import JSON
from strawberry.schema.types.base_scalars import DateDefinition, DateTimeDefinition
from strawberry.types.scalar import ScalarDefinition

from sync.version_vector import VersionVector as ParsedVersionVector
from sync.version_vector import parse as parse_version_vector

VersionVector = NewType("VersionVector", dict[str, int])

# RFC 3339 date-time with an offset, as the GraphQL Scalars project specifies it.
DATE_TIME_SPEC = "https://scalars.graphql.org/andimarek/date-time.html"
# RFC 3339's full-date (ISO 8601 calendar date).
DATE_SPEC = "https://www.rfc-editor.org/rfc/rfc3339#section-5.6"
# The GraphQL multipart request specification (the file of a multipart request).
UPLOAD_SPEC = "https://github.com/jaydenseric/graphql-multipart-request-spec"


def parse_version_vector_literal(
    node: ValueNode, variables: dict[str, Any] | None = None
) -> ParsedVersionVector:
    """A version vector written inline in the document (``baseVersion: {server: 3}``).

    Raises a GraphQLError, not the parser's ValueError: graphql-core keeps any other
    exception from a literal as the validation error's ``original_error``, which the
    server then masks as INTERNAL_SERVER_ERROR. (A variable's ValueError is reported
    as it is, so ``parse_value`` needs no such care.)
    """
    try:
        return parse_version_vector(value_from_ast_untyped(node, variables))
    except ValueError as exc:
        raise GraphQLError(f"Expected value of type 'VersionVector': {exc}", nodes=node) from None


VERSION_VECTOR_SCALAR: ScalarDefinition = strawberry.scalar(
    name="VersionVector",
    description=(
        "A version vector: a JSON object {replicaId: counter} with string keys and"
        " non-negative integer counters (TypeScript: Record<string, number>). A record's"
        " version; a client sends back the one it edited from as `baseVersion`. No"
        " specification beyond this: compare two only by their counters."
    ),
    serialize=dict,
    parse_value=parse_version_vector,
    parse_literal=parse_version_vector_literal,
)


def described(base: ScalarDefinition, description: str, specified_by_url: str) -> ScalarDefinition:
    """Strawberry's definition of a scalar, its parsing and serialising unchanged, with the
    description and specification URL its own definition lacks."""
    return ScalarDefinition(
        name=base.name,
        description=description,
        specified_by_url=specified_by_url,
        serialize=base.serialize,
        parse_value=base.parse_value,
        parse_literal=base.parse_literal,
        origin=base.origin,
    )


DATE_TIME_SCALAR = described(
    DateTimeDefinition,
    "A point in time: an RFC 3339 / ISO 8601 date-time string with its UTC offset, e.g."
    " `2026-03-01T14:05:09.123456+00:00` (`new Date(value)` reads it). Sent in UTC; an input"
    " without an offset is taken as UTC.",
    DATE_TIME_SPEC,
)
DATE_SCALAR = described(
    DateDefinition,
    "A calendar day without a time or zone: an RFC 3339 full-date string `YYYY-MM-DD`,"
    " e.g. `2026-03-01`.",
    DATE_SPEC,
)
UPLOAD_SCALAR = described(
    UploadDefinition,
    "A file sent as a part of a multipart request (the GraphQL multipart request"
    " specification); input only, never in a response.",
    UPLOAD_SPEC,
)

SCALAR_MAP: dict[object, ScalarDefinition] = {
    VersionVector: VERSION_VECTOR_SCALAR,
    dt.datetime: DATE_TIME_SCALAR,
    dt.date: DATE_SCALAR,
    Upload: UPLOAD_SCALAR,
}

__all__ = ["JSON", "SCALAR_MAP", "VersionVector"]
