"""Field values encoded as JSON before execution reaches them.

graphql-core completes a list of objects field by field in Python: for a pull page of
1,000 changes that is most of the request's CPU. A resolver that already holds the page
as JSON in exactly the client's selection (encoded by ``resolvers.selection_json``)
returns it wrapped in ``PreEncoded``; the execution context
below hands it to the response untouched and orjson splices it into the body. The schema
stays typed: validation, introspection and the SDL see ``[Change!]!`` as before.

The execution context is also where each request's execution lets go of itself (see
``FieldsyncExecutionContext.__init__``).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Sequence
from typing import Any

import orjson
from graphql import GraphQLOutputType, GraphQLResolveInfo
from graphql.pyutils import Path
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class PreEncoded:
    """A value that is already the JSON of the field's completed result."""

    __slots__ = ("fragment",)

    def __init__(self, json: str | bytes) -> None:
        self.fragment = orjson.Fragment(json)


class FieldsyncExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, passing ``PreEncoded`` values through as is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """graphql-core's, with resolver helpers that hold the execution weakly.

        graphql-core stores on each execution context helpers made of its own bound
        methods: a reference cycle, so that the execution and all it reaches (variables,
        the request's context, results) outlived the request as garbage only the cyclic
        collector frees. A push of 1,000 changes left 15,219 objects to it, which young
        passes then traversed and promoted, and which fed the full passes that stall a
        long-running worker. Held weakly, the helpers work while the execution runs (its
        own frames keep it alive) and reference counting frees it when it ends.
        """
        super().__init__(*args, **kwargs)
        gather = weakref.WeakMethod(self.gather_async_work)
        track = weakref.WeakMethod(self.track_async_work)

        def gather_async_work(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
            method = gather()
            if method is None:
                raise RuntimeError("the execution this helper belongs to has ended")
            return method(values)

        def track_async_work(values: Sequence[Any]) -> None:
            method = track()
            if method is None:
                raise RuntimeError("the execution this helper belongs to has ended")
            method(values)

        self.async_helpers = GraphQLResolveInfoHelpers(
            gather=gather_async_work, track=track_async_work
        )

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
