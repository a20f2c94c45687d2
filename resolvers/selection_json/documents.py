"""Documents parsed and validated once per distinct text, for code that runs them itself.

Compiled reads and the `changes` subscription look a document's text up here on every
request; only a text seen for the first time is parsed (``max_tokens``) and validated
(graphql-core's rules and ``schema.limits.limit_rules``, through a
``schema.limits.DocumentValidator``), with the ``OperationLimits`` the executor's HTTP
path applies (``server.settings.Settings.operation_limits``): a document is judged the
same way wherever it arrives.
"""

from __future__ import annotations

from collections import OrderedDict

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    parse,
    specified_rules,
)

from resolvers.selection_json.collect import Fragments
from schema.limits import QUERY_TOO_LARGE, DocumentValidator, OperationLimits, limit_rules

# Texts longer than this are judged every time, not kept as cache keys (a frontend's or a
# device's documents are a few hundred characters).
MAX_CACHED_CHARS = 20_000


class DocumentError(Exception):
    """The text is not a valid document; ``errors`` are what the executor would report."""

    def __init__(self, errors: list[GraphQLError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


class Documents:
    """Parse + validate cache (LRU by document text)."""

    def __init__(
        self, schema: GraphQLSchema, limits: OperationLimits, *, maxsize: int = 256
    ) -> None:
        self.schema = schema
        self.limits = limits
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
            # The message and code of schema.limits.LimitErrorCodes (the executor's).
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


def operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    """The operation ``name`` picks (the only one when None), as the executor picks it;
    None when there is no such single operation."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is not None:
        operations = [o for o in operations if o.name is not None and o.name.value == name]
    return operations[0] if len(operations) == 1 else None


def fragments_of(document: DocumentNode) -> Fragments:
    """The document's fragment definitions by name."""
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
