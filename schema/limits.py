"""Limits on abusive operations: a cost rule, and stable codes on limit errors.

Strawberry ships depth, alias and token limits but no cost limit, and its limit errors carry
no code; both are added here (see docs/operations-limits.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLNamedType,
    GraphQLObjectType,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_composite_type,
    is_list_type,
    parse,
)
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, SchemaExtension
from strawberry.extensions.max_aliases import create_validator as create_aliases_validator
from strawberry.extensions.query_depth_limiter import create_validator as create_depth_validator

# Arguments that set how many items a field returns (connections: `first`; pull: `limit`).
SIZE_ARGUMENTS = ("first", "limit")

# Codes in `extensions.code` of limit errors; documented in docs/operations-limits.md.
QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
QUERY_TOO_LARGE = "QUERY_TOO_LARGE"

# Messages of strawberry's and graphql-core's limit errors, which have no code of their own.
_CODED_MESSAGES = (
    (re.compile(r"exceeds maximum operation depth of \d+"), QUERY_TOO_DEEP),
    (re.compile(r"^\d+ aliases found\. Allowed: \d+"), TOO_MANY_ALIASES),
    (re.compile(r"Document contains more than \d+ tokens"), QUERY_TOO_LARGE),
)
# Documents are parsed before ParserCache's hook runs (see LimitErrorCodes.on_parse).
_cached_parse = lru_cache(maxsize=256)(parse)
# graphql-core's "Did you mean ...?" hints leak schema names even with introspection off.
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


@dataclass(frozen=True)
class CostLimits:
    """Parameters of the cost rule."""

    max_cost: int
    # Items assumed for a size argument given as a variable (the page cap), and for list
    # fields without a size argument.
    variable_list_size: int
    default_list_size: int


def cost_limit_rule(limits: CostLimits) -> type[ValidationRule]:
    """A validation rule refusing operations whose estimated cost exceeds ``limits.max_cost``.

    The cost of a field is 1 plus the cost of its selection; a field with a size argument
    (`first`, `limit`) multiplies the cost of its list-typed children by that size (the
    literal, a variable's default, or ``variable_list_size``; absent: the argument's
    default), and a list of objects without one counts ``default_list_size`` items.
    """

    class CostLimitRule(ValidationRule):
        """Estimate each operation's cost before anything executes."""

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            """Cost of one operation; reports an error when over the limit."""
            estimator = _CostEstimator(self.context, node, limits)
            root = estimator.root_type()
            if root is None:
                return
            cost = estimator.selection_cost(node.selection_set, root, pending=None)
            if cost > limits.max_cost:
                name = node.name.value if node.name else "anonymous"
                self.report_error(
                    GraphQLError(
                        f"Operation '{name}' is too costly: estimated cost {cost} exceeds the"
                        f" limit of {limits.max_cost}. Request fewer items (`first`) or fewer"
                        " nested lists.",
                        node,
                        extensions={"code": QUERY_TOO_COSTLY, "cost": cost},
                    )
                )

    return CostLimitRule


class _CostEstimator:
    def __init__(
        self, context: ValidationContext, operation: OperationDefinitionNode, limits: CostLimits
    ) -> None:
        self.context = context
        self.operation = operation
        self.limits = limits
        self.fragments: dict[str, FragmentDefinitionNode] = {
            f.name.value: f
            for f in context.document.definitions
            if isinstance(f, FragmentDefinitionNode)
        }
        self.variable_defaults: dict[str, int] = {}
        for definition in operation.variable_definitions or ():
            if isinstance(definition.default_value, IntValueNode):
                self.variable_defaults[definition.variable.name.value] = int(
                    definition.default_value.value
                )

    def root_type(self) -> GraphQLObjectType | None:
        schema = self.context.schema
        return {
            OperationType.QUERY: schema.query_type,
            OperationType.MUTATION: schema.mutation_type,
            OperationType.SUBSCRIPTION: schema.subscription_type,
        }[self.operation.operation]

    def selection_cost(
        self,
        selection_set: SelectionSetNode | None,
        parent: GraphQLNamedType,
        pending: int | None,
        seen: frozenset[str] = frozenset(),
    ) -> int:
        """Cost of a selection on ``parent``; ``pending`` is a size for list children."""
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field_cost(selection, parent, pending, seen)
            elif isinstance(selection, InlineFragmentNode):
                target = (
                    self._type(selection.type_condition.name.value)
                    if selection.type_condition
                    else parent
                )
                total += self.selection_cost(
                    selection.selection_set, target or parent, pending, seen
                )
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                # Cycles are another rule's error; count each spread once per path.
                if fragment is None or name in seen:
                    continue
                target = self._type(fragment.type_condition.name.value) or parent
                total += self.selection_cost(fragment.selection_set, target, pending, seen | {name})
        return total

    def field_cost(
        self, node: FieldNode, parent: GraphQLNamedType, pending: int | None, seen: frozenset[str]
    ) -> int:
        """1 + children, times the list size when the field is a list of objects."""
        fields = getattr(parent, "fields", None)
        definition: GraphQLField | None = fields.get(node.name.value) if fields else None
        if definition is None:
            # __typename, introspection, or an unknown field (reported by another rule).
            return 1
        field_type = definition.type
        named = get_named_type(field_type)
        size = self._size_argument(node, definition)
        multiplier = 1
        child_pending = None
        if is_list_type(get_nullable_type(field_type)) and is_composite_type(named):
            if size is not None:
                multiplier = size
            elif pending is not None:
                multiplier = pending
            else:
                multiplier = self.limits.default_list_size
        elif size is not None:
            # A connection or page: its list-typed children (edges, changes) hold the items.
            child_pending = size
        return multiplier * (
            1 + self.selection_cost(node.selection_set, named, child_pending, seen)
        )

    def _size_argument(self, node: FieldNode, definition: GraphQLField) -> int | None:
        for name in SIZE_ARGUMENTS:
            if name not in definition.args:
                continue
            given = next((a for a in node.arguments or () if a.name.value == name), None)
            if given is None:
                default = definition.args[name].default_value
                return default if isinstance(default, int) else self.limits.variable_list_size
            if isinstance(given.value, IntValueNode):
                return max(0, int(given.value.value))
            if isinstance(given.value, VariableNode):
                return self.variable_defaults.get(
                    given.value.name.value, self.limits.variable_list_size
                )
            return self.limits.variable_list_size
        return None

    def _type(self, name: str) -> GraphQLNamedType | None:
        return self.context.schema.get_type(name)


class LimitErrorCodes(SchemaExtension):
    """Give limit errors a stable `extensions.code`, and drop "Did you mean" hints."""

    def __init__(self, *, hide_suggestions: bool = True) -> None:
        self.hide_suggestions = hide_suggestions

    def on_parse(self) -> Iterator[None]:
        """Parse first, to code a parse error (too many tokens).

        An error raised by ParserCache's hook escapes every later hook of the operation, so
        this hook (listed before it) parses, through a cache of its own, and raises the
        coded error itself; ParserCache then finds the document in its cache too.
        """
        context = self.execution_context
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
        # A new error, not a mutation: ValidationCache shares error objects across requests.
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


def limit_rules(limits: OperationLimits) -> list[type[ASTValidationRule]]:
    """The validation rules enforcing ``limits`` (depth, aliases, cost, introspection);
    the token limit applies to the parse."""
    cost = CostLimits(
        max_cost=limits.max_cost,
        variable_list_size=limits.variable_list_size,
        default_list_size=limits.default_list_size,
    )
    rules: list[type[ASTValidationRule]] = [
        create_depth_validator(limits.max_depth, None, None),
        create_aliases_validator(limits.max_aliases),
        cost_limit_rule(cost),
    ]
    if not limits.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    return rules


def limit_extensions(limits: OperationLimits) -> list[Any]:
    """The schema extensions enforcing ``limits`` (depth, aliases, tokens, cost, ...)."""
    # The rule classes are built once: ValidationCache keys on them, and a new class per
    # request (what the stock extensions' constructors do) would never hit the cache.
    rules = limit_rules(limits)
    return [
        lambda: LimitErrorCodes(hide_suggestions=not limits.field_suggestions),
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        lambda: AddValidationRules(rules),
    ]
