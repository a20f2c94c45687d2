"""Custom scalars: VersionVector (registered in the schema config) and JSON."""

from __future__ import annotations

from typing import Any, NewType

import strawberry
from graphql import GraphQLError, ValueNode, value_from_ast_untyped
from strawberry.scalars import JSON
from strawberry.types.scalar import ScalarDefinition

from sync.version_vector import VersionVector as ParsedVersionVector
from sync.version_vector import parse as parse_version_vector

VersionVector = NewType("VersionVector", dict[str, int])


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
        "A version vector: a JSON object {replicaId: counter}. A record's version; a client "
        "sends back the one it edited from as `baseVersion`."
    ),
    serialize=dict,
    parse_value=parse_version_vector,
    parse_literal=parse_version_vector_literal,
)

SCALAR_MAP: dict[object, ScalarDefinition] = {VersionVector: VERSION_VECTOR_SCALAR}

__all__ = ["JSON", "SCALAR_MAP", "VersionVector"]
