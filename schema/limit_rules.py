"""The depth, alias and cost limits as one check that runs in time linear in the document.

A document may spread a fragment many times, and a fragment may spread others: ten lines of
``fragment F1 on Query { ...F2 ...F2 }`` expand to a thousand selections, thirty to a
billion. A rule that expands spreads as it walks (strawberry's depth and alias limiters, and
this project's first cost rule) takes time exponential in the document: a 758-byte request
held a core for 11.7 s. Here every fragment is summarised once, in dependency order, and a
spread adds its fragment's summary: the walk visits each node of the document once, whatever
the spreads expand to. Numbers saturate at ``SATURATED`` so a bomb's cost stays a small int.

The limits keep the meanings they had (docs/operations.md, "Operation limits"):

- depth: fields with a selection nested in one another, introspection fields not counted;
- aliases: aliased fields in the document with fragments expanded where they are spread;
- repeats: one response name or fragment selected at most ``max_repeats`` times in one
  selection set (repeats add nothing to a response; graphql-core compares them pairwise);
- cost: 1 per field plus its selection; a field with a size argument (`first`, `limit`)
  multiplies its list-typed children by that size (the literal, a variable's default, or the
  page cap for a variable), and a list of objects without one counts a default size.

Each fragment's cost is linear in the size its list children inherit (``pending``: only the
lists directly in its selection take it, never deeper ones), so a fragment is summarised as
``constant + per_item * pending`` and priced for any spread site in constant time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_composite_type,
    is_list_type,
)

# Arguments that set how many items a field returns (connections: `first`; pull: `limit`).
SIZE_ARGUMENTS = ("first", "limit")
# Far above any limit, far below what a JSON number or a log line cannot hold.
SATURATED = 10**15

QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"


class RuleLimits(Protocol):
    """What the check enforces (``schema.limits.OperationLimits`` is one)."""

    @property
    def max_depth(self) -> int:
        """Fields with a selection nested in one another."""

    @property
    def max_aliases(self) -> int:
        """Aliased fields, counted where their fragments are spread."""

    @property
    def max_cost(self) -> int:
        """Estimated cost of one operation."""

    @property
    def variable_list_size(self) -> int:
        """Items assumed for a size argument given as a variable (the page cap)."""

    @property
    def default_list_size(self) -> int:
        """Items assumed for a list of objects without a size argument."""

    @property
    def max_repeats(self) -> int:
        """Times one response name or fragment may be selected in one selection set:
        repeats add nothing to a response, but graphql-core's field-merging rule compares
        them pairwise (quadratic)."""


@dataclass(frozen=True)
class _Summary:
    """What a selection set contributes, independent of where it is spread."""

    depth: int = 0
    aliases: int = 0
    cost: int = 0
    # Cost per item of the size inherited from the enclosing field (see the module doc).
    cost_per_item: int = 0
    # The most times one response name or one fragment is selected in one selection set.
    repeats: int = 0

    def priced(self, pending: int) -> int:
        """The cost when the enclosing field hands down ``pending`` items."""
        return _cap(self.cost + self.cost_per_item * pending)


def _cap(value: int) -> int:
    return min(value, SATURATED)


def operation_limit_errors(
    schema: GraphQLSchema, document: DocumentNode, limits: RuleLimits
) -> list[GraphQLError]:
    """The depth, alias and cost errors of ``document``, in time linear in its size."""
    summaries = _DocumentSummaries(schema, document, limits)
    errors: list[GraphQLError] = []
    aliases = 0
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        summary = summaries.operation(definition)
        aliases = _cap(aliases + summary.aliases)
        name = definition.name.value if definition.name else "anonymous"
        if summary.depth > limits.max_depth:
            errors.append(
                GraphQLError(
                    f"'{name}' exceeds maximum operation depth of {limits.max_depth}",
                    definition,
                    extensions={"code": QUERY_TOO_DEEP},
                )
            )
        if summary.repeats > limits.max_repeats:
            errors.append(
                GraphQLError(
                    f"Operation '{name}' selects one field or fragment {summary.repeats} times"
                    f" in one selection set (at most {limits.max_repeats}).",
                    definition,
                    extensions={"code": QUERY_TOO_COMPLEX},
                )
            )
        cost = summary.priced(limits.default_list_size)
        if cost > limits.max_cost:
            errors.append(
                GraphQLError(
                    f"Operation '{name}' is too costly: estimated cost {cost} exceeds the"
                    f" limit of {limits.max_cost}. Request fewer items (`first`) or fewer"
                    " nested lists.",
                    definition,
                    extensions={"code": QUERY_TOO_COSTLY, "cost": cost},
                )
            )
    if aliases > limits.max_aliases:
        errors.append(
            GraphQLError(
                f"{aliases} aliases found. Allowed: {limits.max_aliases}",
                extensions={"code": TOO_MANY_ALIASES},
            )
        )
    return errors


class _DocumentSummaries:
    """Summaries of a document's fragments, each computed once."""

    def __init__(self, schema: GraphQLSchema, document: DocumentNode, limits: RuleLimits) -> None:
        self.schema = schema
        self.limits = limits
        self.fragments: dict[str, FragmentDefinitionNode] = {}
        for definition in document.definitions:
            if isinstance(definition, FragmentDefinitionNode):
                self.fragments.setdefault(definition.name.value, definition)
        self.variable_defaults: dict[str, int] = {}
        self.summaries: dict[str, _Summary] = {}
        # Dependencies first, so a spread always finds its fragment summarised; a spread
        # of a fragment on a cycle (another rule's error) or of an unknown one adds nothing.
        for name in _dependency_order(self.fragments):
            fragment = self.fragments[name]
            target = self.schema.get_type(fragment.type_condition.name.value)
            self.summaries[name] = self._selection(fragment.selection_set, target)

    def operation(self, operation: OperationDefinitionNode) -> _Summary:
        """The summary of one operation (its variables' defaults size its lists)."""
        self.variable_defaults = {
            d.variable.name.value: int(d.default_value.value)
            for d in operation.variable_definitions or ()
            if isinstance(d.default_value, IntValueNode)
        }
        root = {
            OperationType.QUERY: self.schema.query_type,
            OperationType.MUTATION: self.schema.mutation_type,
            OperationType.SUBSCRIPTION: self.schema.subscription_type,
        }[operation.operation]
        return self._selection(operation.selection_set, root)

    def _selection(self, selection_set: SelectionSetNode, parent: Any) -> _Summary:
        depth = aliases = cost = per_item = repeats = 0
        selected: dict[str, int] = {}
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                part = self._field(selection, parent)
                name = (selection.alias or selection.name).value
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.schema.get_type(condition.name.value) if condition else parent
                part = self._selection(selection.selection_set, target)
                name = ""
            elif isinstance(selection, FragmentSpreadNode):
                part = self.summaries.get(selection.name.value, _Summary())
                name = "..." + selection.name.value
            else:  # pragma: no cover - the three selection kinds of the spec
                continue
            if name:
                selected[name] = selected.get(name, 0) + 1
                repeats = max(repeats, selected[name])
            depth = max(depth, part.depth)
            aliases = _cap(aliases + part.aliases)
            cost = _cap(cost + part.cost)
            per_item = _cap(per_item + part.cost_per_item)
            repeats = max(repeats, part.repeats)
        return _Summary(depth, aliases, cost, per_item, repeats)

    def _field(self, node: FieldNode, parent: GraphQLNamedType | None) -> _Summary:
        aliases = 1 if node.alias else 0
        fields = getattr(parent, "fields", None)
        definition: GraphQLField | None = fields.get(node.name.value) if fields else None
        named = get_named_type(definition.type) if definition else None
        inner = (
            self._selection(node.selection_set, named)
            if node.selection_set is not None
            else _Summary()
        )
        aliases = _cap(aliases + inner.aliases)
        # Introspection fields do not count towards depth (as in strawberry's limiter).
        counts_depth = node.selection_set is not None and not node.name.value.startswith("__")
        depth = 1 + inner.depth if counts_depth else 0
        repeats = inner.repeats
        if definition is None:
            # __typename, introspection, or an unknown field (reported by another rule).
            return _Summary(depth, aliases, 1, 0, repeats)
        size = self._size_argument(node, definition)
        default = self.limits.default_list_size
        if is_list_type(get_nullable_type(definition.type)) and is_composite_type(named):
            each = _cap(1 + inner.priced(default))
            if size is None:
                # Sized by the enclosing field's argument, when it has one.
                return _Summary(depth, aliases, 0, each, repeats)
            return _Summary(depth, aliases, _cap(size * each), 0, repeats)
        # A connection or page: its list-typed children (edges, changes) hold the items.
        cost = _cap(1 + inner.priced(default if size is None else size))
        return _Summary(depth, aliases, cost, 0, repeats)

    def _size_argument(self, node: FieldNode, definition: GraphQLField) -> int | None:
        for name in SIZE_ARGUMENTS:
            if name not in definition.args:
                continue
            given = next((a for a in node.arguments or () if a.name.value == name), None)
            if given is None:
                default = definition.args[name].default_value
                return default if isinstance(default, int) else self.limits.variable_list_size
            if isinstance(given.value, IntValueNode):
                return self._priced(name, _cap(max(0, int(given.value.value))))
            if isinstance(given.value, VariableNode):
                return self._priced(
                    name,
                    self.variable_defaults.get(
                        given.value.name.value, self.limits.variable_list_size
                    ),
                )
            return self.limits.variable_list_size
        return None

    def _priced(self, argument: str, size: int) -> int:
        """A `first` over the page cap costs the cap: every connection refuses it ("`first`
        must be between 1 and N") before reading anything, and that range is the answer the
        caller needs, not a cost estimate for a page that is never built."""
        if argument == "first":
            return min(size, self.limits.variable_list_size)
        return size


def _spreads(selection_set: SelectionSetNode) -> list[str]:
    """Names of the fragments spread in a selection set, not looking into those fragments."""
    names: list[str] = []
    stack = [selection_set]
    while stack:
        for selection in stack.pop().selections:
            if isinstance(selection, FragmentSpreadNode):
                names.append(selection.name.value)
            elif isinstance(selection, FieldNode | InlineFragmentNode) and selection.selection_set:
                stack.append(selection.selection_set)
    return names


def _dependency_order(fragments: dict[str, FragmentDefinitionNode]) -> list[str]:
    """Fragment names, each after every fragment it spreads (edges closing a cycle dropped).

    Iterative: a chain of a thousand fragments must not exhaust Python's recursion limit.
    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start, fragment in fragments.items():
        if start in state:
            continue
        state[start] = 1
        path: list[tuple[str, list[str]]] = [(start, _spreads(fragment.selection_set))]
        while path:
            name, pending = path[-1]
            if pending:
                child = pending.pop()
                if child in fragments and child not in state:
                    state[child] = 1
                    path.append((child, _spreads(fragments[child].selection_set)))
                continue
            path.pop()
            state[name] = 2
            order.append(name)
    return order
