"""Assemble the root types from the resolvers' per-domain pieces and build the Schema.

The app is built here (``server.app``), so the Schema is too: its extensions time
operations (``server.metrics``), mask unexpected errors and return the request's
connection; ``export_sdl`` gives ``schema.graphql``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import strawberry
import structlog
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, ParserCache, SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types.base import get_object_definition
from strawberry.types.graphql import OperationType

from db.engine import database_unavailable
from resolvers.assets import AssetMutations, AssetQueries
from resolvers.contacts import ContactMutations, ContactQueries
from resolvers.context import PublicError
from resolvers.credentials import CredentialMutations, CredentialQueries
from resolvers.custom_fields import CustomFieldMutations, CustomFieldQueries
from resolvers.customers import CustomerMutations, CustomerQueries
from resolvers.external import ExternalSyncMutations, ExternalSyncQueries
from resolvers.facilities import FacilityMutations, FacilityQueries
from resolvers.nodes import NodeQueries
from resolvers.subscriptions import SyncSubscriptions
from resolvers.sync import SyncMutations, SyncQueries
from resolvers.users import UserMutations, UserQueries
from schema.input_plans import PlannedInputsExecutionContext
from schema.limits import OperationLimits, limit_extensions
from schema.scalars import SCALAR_MAP
from server.metrics import OperationMetrics

log = structlog.get_logger("fieldsync.graphql")

Query = merge_types(
    "Query",
    (
        UserQueries,
        NodeQueries,
        CustomerQueries,
        ContactQueries,
        FacilityQueries,
        AssetQueries,
        CustomFieldQueries,
        CredentialQueries,
        SyncQueries,
        ExternalSyncQueries,
    ),
)
Mutation = merge_types(
    "Mutation",
    (
        UserMutations,
        CustomerMutations,
        ContactMutations,
        FacilityMutations,
        AssetMutations,
        CustomFieldMutations,
        CredentialMutations,
        SyncMutations,
        ExternalSyncMutations,
    ),
)

Subscription = merge_types("Subscription", (SyncSubscriptions,))

get_object_definition(
    Query, strict=True
).description = "Reads: the caller, records, lists, `node(id:)`."
get_object_definition(
    Mutation, strict=True
).description = "Writes: each returns a typed result or error."
get_object_definition(
    Subscription, strict=True
).description = "Live sync over WebSocket (graphql-transport-ws): see docs/subscriptions.md."


class CloseRequestResources(SchemaExtension):
    """Return the request's read connection to the pool when the operation ends."""

    async def on_execute(self) -> AsyncIterator[None]:
        """Tell the context whether the operation only reads (known once it is parsed)."""
        context = self.execution_context.context
        if hasattr(context, "reads_only"):
            context.reads_only = self.execution_context.operation_type is OperationType.QUERY
        yield

    async def on_operation(self) -> AsyncIterator[None]:
        """Wrap the whole operation."""
        try:
            yield
        finally:
            context = self.execution_context.context
            close = getattr(context, "close", None)
            if close is not None:
                await close()


def should_mask(error: GraphQLError) -> bool:
    """Mask unexpected exceptions; keep GraphQL validation and our public errors readable."""
    original = error.original_error
    if original is None or isinstance(original, PublicError | GraphQLError):
        return False
    if database_unavailable(original):
        # An outage, not a bug: one line per request, no traceback flood.
        log.warning("database unavailable", error=repr(original), path=error.path)
        return True
    log.error("unexpected error", error=repr(original), path=error.path, exc_info=original)
    return True


class MaskUnexpectedErrors(MaskErrors):
    """Masked errors get a stable code so clients can tell them apart."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=should_mask, error_message="Internal server error")

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        """Replace the message; code DATABASE_UNAVAILABLE (retry) or INTERNAL_SERVER_ERROR."""
        unavailable = error.original_error is not None and database_unavailable(
            error.original_error
        )
        code = "DATABASE_UNAVAILABLE" if unavailable else "INTERNAL_SERVER_ERROR"
        return GraphQLError(
            message="Database unavailable: retry shortly" if unavailable else self.error_message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions={"code": code},
        )


def build_schema(
    extra_extensions: list[Any] | None = None, limits: OperationLimits | None = None
) -> strawberry.Schema:
    """The fieldsync GraphQL schema; ``limits`` (default: the defaults) bound operations."""
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            OperationMetrics,  # outermost: times and counts the whole operation
            CloseRequestResources,
            MaskUnexpectedErrors,
            # Operation limits (depth, aliases, tokens, cost, introspection): schema/limits.py.
            # Before the caches: their hooks must wrap the parse, whose errors they code.
            *limit_extensions(limits or OperationLimits()),
            # Devices send the same few documents all day: parse each once (validation
            # results are remembered by the limit extensions' validator).
            lambda: ParserCache(maxsize=256),
            *(extra_extensions or []),
        ],
        config=StrawberryConfig(scalar_map=SCALAR_MAP),
        # Pre-encoded results (schema/preencoded.py) and planned list variables
        # (schema/input_plans.py: a push's 1,000 changes).
        execution_context_class=PlannedInputsExecutionContext,
    )


def export_sdl() -> str:
    """The schema as SDL, as committed in ``schema.graphql``."""
    return build_schema().as_str() + "\n"
