"""Limits on abusive operations, as schema extensions, and stable codes on limit errors.

The depth, alias and cost limits are one linear-time rule (schema/limit_rules.py: strawberry's
own depth and alias limiters expand fragment spreads and take exponential time); the token
limit bounds the parse. See docs/operations.md, "Operation limits".
"""

from __future__ import annotations

import gc
import re
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from graphql import DocumentNode, GraphQLError, GraphQLSchema, ValidationContext, parse
from graphql.validation import (
    ASTValidationRule,
    NoSchemaIntrospectionCustomRule,
    ValidationRule,
)
from graphql.validation.rules import overlapping_fields_can_be_merged
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, SchemaExtension
from strawberry.schema.schema import validate_document

from schema.limit_rules import (
    QUERY_TOO_COMPLEX,
    QUERY_TOO_COSTLY,
    QUERY_TOO_DEEP,
    TOO_MANY_ALIASES,
    operation_limit_errors,
)

# Codes in `extensions.code` of limit errors; documented in docs/operations.md. The depth,
# alias and cost errors carry theirs from schema/limit_rules.py.
QUERY_TOO_LARGE = "QUERY_TOO_LARGE"
__all__ = [
    "QUERY_TOO_COMPLEX",
    "QUERY_TOO_COSTLY",
    "QUERY_TOO_DEEP",
    "QUERY_TOO_LARGE",
    "TOO_MANY_ALIASES",
    "BoundedValidation",
    "DocumentValidator",
    "LimitErrorCodes",
    "OperationLimits",
    "code_for",
    "limit_extensions",
    "limit_rules",
]

# Messages of graphql-core's limit errors, which have no code of their own: the token limit,
# the field-merging rule's work budget, and the error-count limit.
_CODED_MESSAGES = (
    (re.compile(r"Document contains more than \d+ tokens"), QUERY_TOO_LARGE),
    (re.compile(r"^Validation aborted\.$"), QUERY_TOO_COMPLEX),
    (re.compile(r"^Too many validation errors, error limit reached"), QUERY_TOO_COMPLEX),
    # A value outside an enum, as a variable or inline (a `types` filter naming no record
    # type): the client's input, coded as for any other bad argument.
    (re.compile(r"does not exist in '\w+' enum"), "BAD_USER_INPUT"),
)


def code_for(message: str) -> str | None:
    """The code of a graphql-core error that has none of its own, by its message (for
    transports that report errors without the executor, e.g. the WebSocket endpoint)."""
    return next((code for pattern, code in _CODED_MESSAGES if pattern.search(message)), None)


# graphql-core's field-merging rule compares same-named fields pairwise (quadratic): 1,200
# copies of `me { id }` spent its default budget of 500,000 comparisons in 1.8 s. Documents
# of real clients spend none of it (GraphiQL's introspection query and the frontend bench's
# reads included); 20,000 is about 70 ms of this machine, within the validation budget.
FIELD_MERGE_BUDGET = 20_000
overlapping_fields_can_be_merged.MAX_COMPLEXITY_BUDGET = FIELD_MERGE_BUDGET
# Documents are parsed before ParserCache's hook runs (see LimitErrorCodes.on_parse).
_cached_parse = lru_cache(maxsize=256)(parse)
# graphql-core's "Did you mean ...?" hints leak schema names even with introspection off.
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


class LimitErrorCodes(SchemaExtension):
    """Give limit errors a stable `extensions.code`, and drop "Did you mean" hints."""

    def __init__(self, *, hide_suggestions: bool = True, max_chars: int | None = None) -> None:
        self.hide_suggestions = hide_suggestions
        self.max_chars = max_chars

    def on_parse(self) -> Iterator[None]:
        """Parse first, to code a parse error (too many tokens), after a length check.

        An error raised by ParserCache's hook escapes every later hook of the operation, so
        this hook (listed before it) parses, through a cache of its own, and raises the
        coded error itself; ParserCache then finds the document in its cache too.
        """
        context = self.execution_context
        if self.max_chars is not None and context.query and len(context.query) > self.max_chars:
            raise GraphQLError(
                f"Document is longer than {self.max_chars} characters.",
                extensions={"code": QUERY_TOO_LARGE},
            )
        if context.graphql_document is None and context.query:
            try:
                context.graphql_document = _cached_parse(context.query, **context.parse_options)
            except GraphQLError as error:
                raise self._rewrite(error) from None
        yield

    def on_operation(self) -> Iterator[None]:
        """Rewrite the finished result's errors."""
        yield
        result = self.execution_context.result
        errors: list[GraphQLError] | None = getattr(result, "errors", None)
        if errors:
            # Any result kind with errors (plain or streamed initial result).
            setattr(result, "errors", [self._rewrite(e) for e in errors])  # noqa: B010

    def _rewrite(self, error: GraphQLError) -> GraphQLError:
        message = error.message
        extensions = dict(error.extensions or {})
        if "code" not in extensions:
            for pattern, code in _CODED_MESSAGES:
                if pattern.search(message):
                    extensions["code"] = code
                    break
        if self.hide_suggestions:
            message = _SUGGESTION.sub("", message)
        if message == error.message and extensions == (error.extensions or {}):
            return error
        # A new error, not a mutation: DocumentValidator shares error objects across requests.
        return GraphQLError(
            message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=error.original_error,
            extensions=extensions or None,
        )


@dataclass(frozen=True)
class OperationLimits:
    """Every operation limit; ``server.settings.Settings.operation_limits()`` fills it."""

    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 5000
    max_cost: int = 1_000_000
    variable_list_size: int = 100
    default_list_size: int = 10
    introspection: bool = True
    field_suggestions: bool = False
    max_repeats: int = 50
    # Comments, white space and strings are not tokens: a document of a few tokens could
    # still be megabytes for the lexer to walk.
    max_chars: int = 100_000
    # CPU budget of one document's validation (every rule), in milliseconds.
    max_validation_ms: int = 100


def _full_collections() -> int:
    return int(gc.get_stats()[2]["collections"])


def validation_deadline_rule(budget_ms: int) -> type[ValidationRule]:
    """A rule that aborts the validation it is part of after ``budget_ms`` of CPU time.

    Every rule is meant to run in time linear in the document; this one bounds what a rule
    of a library might still do that is not (checked every 64 nodes of the visit).
    """

    class ValidationDeadline(ValidationRule):
        """Stop the visit past the deadline."""

        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            # CPU time of this thread: a busy machine does not make a document too complex.
            self.deadline = time.thread_time() + budget_ms / 1000
            self.full_collections = _full_collections()
            self.visited = 0

        def enter(self, *_: Any) -> None:
            """Called for every node; looks at the clock now and then."""
            self.visited += 1
            if self.visited % 64 or time.thread_time() <= self.deadline:
                return
            if _full_collections() != self.full_collections:
                # A full collection ran meanwhile: its time belongs to whatever allocated
                # before this request. Give the document its budget once more (once: a
                # document that keeps the collector busy is itself the problem).
                self.full_collections = -1
                self.deadline = time.thread_time() + budget_ms / 1000
                return
            raise ValidationAbortedError(
                f"Validation took longer than {budget_ms} ms: simplify the document.",
                extensions={"code": QUERY_TOO_COMPLEX},
            )

    return ValidationDeadline


def limit_rules(limits: OperationLimits) -> list[type[ASTValidationRule]]:
    """The validation rules added to graphql-core's for ``limits``: the time budget and,
    when switched off, introspection. Depth, aliases and cost are checked before any rule
    runs (``DocumentValidator``); the token limit applies to the parse."""
    rules: list[type[ASTValidationRule]] = [validation_deadline_rule(limits.max_validation_ms)]
    if not limits.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    return rules


class DocumentValidator:
    """Validates documents within the operation limits, remembering results by document.

    The linear depth, alias and cost check runs first, so a fragment bomb is refused
    before graphql-core's rules (some of them quadratic) see it; then every rule, under
    the time budget. Each read path (the executor, compiled reads, subscriptions) uses
    this, so a document is judged the same way wherever it arrives.
    """

    def __init__(self, limits: OperationLimits, *, maxsize: int = 256) -> None:
        self.limits = limits
        self.maxsize = maxsize
        self._cache: OrderedDict[
            tuple[int, DocumentNode, tuple[type[ASTValidationRule], ...]], list[GraphQLError]
        ] = OrderedDict()

    def validate(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        rules: Sequence[type[ASTValidationRule]],
    ) -> list[GraphQLError]:
        """Errors of ``document`` under ``rules`` (graphql-core's and ``limit_rules``)."""
        # Keyed by the schema's identity: a schema is built once per app.
        key = (id(schema), document, tuple(rules))
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        errors = operation_limit_errors(schema, document, self.limits)
        if not errors:
            errors = validate_document(schema, document, key[2])
        if any((e.extensions or {}).get("code") == QUERY_TOO_COMPLEX for e in errors):
            # Past the budget maybe only because of a garbage collection: judge it again.
            return errors
        self._cache[key] = errors
        if len(self._cache) > self.maxsize:
            self._cache.popitem(last=False)
        return errors


class BoundedValidation(SchemaExtension):
    """The executor's validation step through a ``DocumentValidator`` (replaces
    strawberry's ValidationCache, which validates without the limit check first)."""

    def __init__(self, validator: DocumentValidator) -> None:
        self.validator = validator

    def on_validate(self) -> Iterator[None]:
        """Validate (or find the remembered result) before strawberry would."""
        context = self.execution_context
        if context.graphql_document is not None:
            context.pre_execution_errors = self.validator.validate(
                context.schema._schema, context.graphql_document, context.validation_rules
            )
        yield


def limit_extensions(limits: OperationLimits) -> list[Any]:
    """The schema extensions enforcing ``limits`` (depth, aliases, tokens, cost, ...)."""
    # The rule classes and the validator are built once: the validator keys its results on
    # the rules, and a new class per request would never find a remembered result.
    rules = limit_rules(limits)
    validator = DocumentValidator(limits)
    return [
        lambda: LimitErrorCodes(
            hide_suggestions=not limits.field_suggestions, max_chars=limits.max_chars
        ),
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        lambda: AddValidationRules(rules),
        lambda: BoundedValidation(validator),
    ]
