"""Sync's lists encoded in one pass: pull pages, push outcomes and live batches.

A device's document selects the same fields on every change of a page or a live batch,
and on every outcome of a push, so the selection is reduced once to a shape and every item
is encoded by a generated function; graphql-core never completes them field by field. The
specs sit next to their types (``CHANGE`` and ``CHANGE_RESULT`` in ``schema/sync.py``,
``CHANGE_BATCH`` in ``schema/subscriptions.py``); the typed path builds its objects from
the same specs (``schema.encoding.typed_builder``), and ``tests/api/test_encoded_lists.py``
compares the two.

The `changes` subscription is compiled here too: the WebSocket endpoint
(``server/websocket.py``) looks its document up in a :class:`~.documents.Documents` cache
and gets a :class:`BatchEncoder`, whose ``key`` lets every subscriber with an equal
selection share one encoded payload per batch.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import DocumentNode, GraphQLError, OperationDefinitionNode, OperationType
from graphql.execution.values import get_argument_values, get_variable_values

from resolvers.selection_json.collect import collect_fields
from resolvers.selection_json.documents import DocumentError, Documents, fragments_of, operation
from resolvers.selection_json.shapes import Shape, builder, shape_of
from schema.subscriptions import CHANGE_BATCH
from sync.hub import Batch


@dataclass(frozen=True)
class BatchEncoder:
    """Writes the `next` payload of a batch for one compiled `ChangeBatch` selection."""

    root_key: str
    shape: Shape

    @property
    def key(self) -> Hashable:
        """Equal keys produce identical payloads for identical batches."""
        return (self.root_key, self.shape)

    def encode(self, batch: Batch) -> str:
        """``{"data":{"<root>":{...}}}`` for ``batch`` (the part every subscriber shares)."""
        value = builder(CHANGE_BATCH, self.shape)(batch)
        return orjson.dumps({"data": {self.root_key: value}}).decode()


@dataclass(frozen=True)
class ChangesSubscription:
    """A valid `changes` subscription: its arguments and encoder."""

    device_id: str
    since: str | None
    encoder: BatchEncoder
    # The feed's record types as the schema's enum values (None: all).
    types: list[Any] | None = None
    # `since` was omitted (not given as null): resume from the server's position.
    resume: bool = False


@dataclass(frozen=True)
class OtherOperation:
    """A valid query or mutation sent over the socket (executed normally)."""

    document: DocumentNode
    operation: OperationDefinitionNode


def prepare_subscription(
    documents: Documents, text: str, variables: dict[str, Any] | None, operation_name: str | None
) -> ChangesSubscription | OtherOperation:
    """What to run for a subscribe message; raises DocumentError."""
    document = documents.document(text)
    chosen = operation(document, operation_name)
    if chosen is None:
        raise DocumentError(
            [GraphQLError("name exactly one operation of the document in `operationName`")]
        )
    if chosen.operation is not OperationType.SUBSCRIPTION:
        return OtherOperation(document, chosen)
    schema = documents.schema
    coerced = get_variable_values(schema, chosen.variable_definitions or (), variables or {})
    if isinstance(coerced, list):
        raise DocumentError(coerced)
    fragments = fragments_of(document)
    root = schema.subscription_type
    assert root is not None
    fields = collect_fields(schema, fragments, coerced.coerced, root, [chosen.selection_set])
    # Validation allows exactly one root field in a subscription; `changes` is the only one.
    [(root_key, nodes)] = fields.items()
    arguments = get_argument_values(root.fields["changes"], nodes[0], coerced)
    shape = shape_of(schema, CHANGE_BATCH, fragments, coerced.coerced, nodes)
    if shape is None:
        raise DocumentError(
            [GraphQLError("the selection on ChangeBatch does not reduce to one shape")]
        )
    return ChangesSubscription(
        str(arguments["deviceId"]),
        arguments.get("since"),
        BatchEncoder(root_key, shape),
        arguments.get("types"),
        "since" not in arguments,
    )
