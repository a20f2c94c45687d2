"""Field values encoded as JSON before execution reaches them.

graphql-core completes a list of objects field by field in Python: for a pull page of
1,000 changes that is most of the request's CPU. A resolver that already holds the page
as JSON in exactly the client's selection (encoded by ``resolvers.selection_json``)
returns it wrapped in ``PreEncoded``; the execution context
below hands it to the response untouched and orjson splices it into the body. The schema
stays typed: validation, introspection and the SDL see ``[Change!]!`` as before.
"""

from __future__ import annotations

from typing import Any

import orjson
from graphql import GraphQLOutputType, GraphQLResolveInfo
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class PreEncoded:
    """A value that is already the JSON of the field's completed result."""

    __slots__ = ("fragment",)

    def __init__(self, json: str | bytes) -> None:
        self.fragment = orjson.Fragment(json)


class FieldsyncExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, passing ``PreEncoded`` values through as is."""

    def complete_value(
        self,
        return_type: GraphQLOutputType,
        field_details_list: Any,
        info: GraphQLResolveInfo[Any],
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        """Skip completion for pre-encoded values; everything else as graphql-core does."""
        if type(result) is PreEncoded:
            return result.fragment
        return super().complete_value(
            return_type, field_details_list, info, path, result, position_context
        )
