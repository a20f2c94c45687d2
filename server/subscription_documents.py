"""Subscription documents: parsed and validated once per distinct text, compiled to encoders.

A device sends the same `changes` document for months; per subscribe the endpoint only
looks the text up here, coerces the variables and reads the two arguments. The selection
under `changes` is compiled to a :class:`BatchEncoder` (``resolvers.encoded``: aliases,
fragments, `__typename`, @skip/@include applied), whose ``key`` lets every subscriber with
an equal selection share one encoded payload per batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    parse,
    specified_rules,
)
from graphql.execution.values import get_argument_values, get_variable_values

from resolvers import encoded
from resolvers.change_json import CHANGE_BATCH
from resolvers.encoded import Shape
from schema.limits import QUERY_TOO_LARGE, DocumentValidator, OperationLimits, limit_rules
from server.field_collection import collect_fields
from sync.hub import Batch

# Longer documents are judged each time, not kept as cache keys.
MAX_CACHED_CHARS = 20_000


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
        value = encoded.builder(CHANGE_BATCH, self.shape)(batch)
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


class DocumentError(Exception):
    """The subscribe payload is not a runnable operation; ``errors`` go to the client."""

    def __init__(self, errors: list[GraphQLError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


class SubscriptionDocuments:
    """Parse + validate cache (LRU by document text) and compiler."""

    def __init__(
        self, schema: GraphQLSchema, limits: OperationLimits, *, maxsize: int = 256
    ) -> None:
        self.schema = schema
        self.limits = limits
        # The same rules and limits as the executor's (schema/limits.py).
        self.rules = [*specified_rules, *limit_rules(limits)]
        self.validator = DocumentValidator(limits, maxsize=maxsize)
        self.maxsize = maxsize
        self._cache: OrderedDict[str, DocumentNode | list[GraphQLError]] = OrderedDict()

    def document(self, text: str) -> DocumentNode:
        """The parsed, validated document; raises DocumentError."""
        cached = self._cache.get(text)
        if cached is None:
            cached = self._parse(text)
            if len(text) <= MAX_CACHED_CHARS:
                self._cache[text] = cached
                if len(self._cache) > self.maxsize:
                    self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(text)
        if isinstance(cached, list):
            raise DocumentError(cached)
        return cached

    def _parse(self, text: str) -> DocumentNode | list[GraphQLError]:
        if len(text) > self.limits.max_chars:
            return [
                GraphQLError(
                    f"Document is longer than {self.limits.max_chars} characters.",
                    extensions={"code": QUERY_TOO_LARGE},
                )
            ]
        try:
            document = parse(text, max_tokens=self.limits.max_tokens)
        except GraphQLError as exc:
            return [exc]
        errors = self.validator.validate(self.schema, document, self.rules)
        return list(errors) if errors else document

    def prepare(
        self, text: str, variables: dict[str, Any] | None, operation_name: str | None
    ) -> ChangesSubscription | OtherOperation:
        """What to run for a subscribe message; raises DocumentError."""
        document = self.document(text)
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if operation_name is not None:
            operations = [o for o in operations if o.name and o.name.value == operation_name]
        if len(operations) != 1:
            raise DocumentError(
                [GraphQLError("name exactly one operation of the document in `operationName`")]
            )
        operation = operations[0]
        if operation.operation is not OperationType.SUBSCRIPTION:
            return OtherOperation(document, operation)
        coerced = get_variable_values(
            self.schema, operation.variable_definitions or (), variables or {}
        )
        if isinstance(coerced, list):
            raise DocumentError(coerced)
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        root = self.schema.subscription_type
        assert root is not None
        fields = collect_fields(
            self.schema, fragments, coerced.coerced, root, [operation.selection_set]
        )
        # Validation allows exactly one root field in a subscription; `changes` is the only one.
        [(root_key, nodes)] = fields.items()
        arguments = get_argument_values(root.fields["changes"], nodes[0], coerced)
        encoder = self._compile(root_key, nodes, fragments, coerced.coerced)
        return ChangesSubscription(
            str(arguments["deviceId"]),
            arguments.get("since"),
            encoder,
            arguments.get("types"),
            "since" not in arguments,
        )

    def _compile(
        self,
        root_key: str,
        nodes: list[FieldNode],
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
    ) -> BatchEncoder:
        shape = encoded.compile_shape(CHANGE_BATCH, fragments, variables, nodes)
        if shape is None:
            raise DocumentError(
                [GraphQLError("the selection on ChangeBatch does not reduce to one shape")]
            )
        return BatchEncoder(root_key, shape)
