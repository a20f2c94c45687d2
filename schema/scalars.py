"""Custom scalars: VersionVector (registered in the schema config) and JSON."""

from __future__ import annotations

from typing import NewType

import strawberry
from strawberry.scalars import JSON
from strawberry.types.scalar import ScalarDefinition

from sync.version_vector import parse as parse_version_vector

VersionVector = NewType("VersionVector", dict[str, int])

VERSION_VECTOR_SCALAR: ScalarDefinition = strawberry.scalar(
    name="VersionVector",
    description=(
        "A version vector: a JSON object {replicaId: counter}. A record's version; a client "
        "sends back the one it edited from as `baseVersion`."
    ),
    serialize=dict,
    parse_value=parse_version_vector,
)

SCALAR_MAP: dict[object, ScalarDefinition] = {VersionVector: VERSION_VECTOR_SCALAR}

__all__ = ["JSON", "SCALAR_MAP", "VersionVector"]
