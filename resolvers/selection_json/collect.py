"""Field collection: which fields a selection set asks for, and @skip/@include.

GraphQL execution's "collect fields" for code that reads a document without the executor:
compiled reads (their root field and every level below it), the `changes` subscription,
encoders of resolvers that answer a whole list at once, and the request metrics (which
label an operation by its root fields). Fragments, inline fragments (abstract type
conditions included) and @skip/@include are applied; fields merge by response key, in
response order. This is the only evaluator of @skip/@include outside graphql-core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionNode,
    SelectionSetNode,
    VariableNode,
    is_abstract_type,
)

Fragments = Mapping[str, FragmentDefinitionNode]


def included(node: SelectionNode, variables: Mapping[str, Any]) -> bool:
    """Evaluate @skip / @include (their `if` is a literal or a coerced variable)."""
    for directive in node.directives or ():
        name = directive.name.value
        if name not in ("skip", "include"):
            continue
        value: Any = None
        for argument in directive.arguments or ():
            if argument.name.value == "if":
                node_value = argument.value
                if isinstance(node_value, VariableNode):
                    value = variables.get(node_value.name.value)
                else:
                    value = getattr(node_value, "value", None)
        if (name == "skip" and value is True) or (name == "include" and value is not True):
            return False
    return True


def _applies(schema: GraphQLSchema, condition: str | None, type_: GraphQLObjectType) -> bool:
    if condition is None or condition == type_.name:
        return True
    abstract = schema.get_type(condition)
    return is_abstract_type(abstract) and schema.is_sub_type(abstract, type_)


def collect_fields(
    schema: GraphQLSchema,
    fragments: Fragments,
    variables: Mapping[str, Any],
    type_: GraphQLObjectType,
    selection_sets: Iterable[SelectionSetNode | None],
) -> dict[str, list[FieldNode]]:
    """Response key -> merged field nodes, in response order (fragments and directives applied)."""
    fields: dict[str, list[FieldNode]] = {}
    visited: set[str] = set()
    for selection_set in selection_sets:
        _walk(schema, fragments, variables, type_, selection_set, fields, visited)
    return fields


def _walk(
    schema: GraphQLSchema,
    fragments: Fragments,
    variables: Mapping[str, Any],
    type_: GraphQLObjectType,
    selection_set: SelectionSetNode | None,
    fields: dict[str, list[FieldNode]],
    visited: set[str],
) -> None:
    # A module-level function, not a closure that calls itself: such a closure is a
    # reference cycle holding the request's variables (a push's 1,000 changes), which only
    # the cyclic collector then frees.
    for node in selection_set.selections if selection_set else ():
        if not included(node, variables):
            continue
        if isinstance(node, FieldNode):
            key = node.alias.value if node.alias else node.name.value
            fields.setdefault(key, []).append(node)
        elif isinstance(node, InlineFragmentNode):
            condition = node.type_condition.name.value if node.type_condition else None
            if _applies(schema, condition, type_):
                _walk(schema, fragments, variables, type_, node.selection_set, fields, visited)
        elif isinstance(node, FragmentSpreadNode):
            name = node.name.value
            fragment = fragments.get(name)
            if name in visited or fragment is None:
                continue
            visited.add(name)
            if _applies(schema, fragment.type_condition.name.value, type_):
                _walk(schema, fragments, variables, type_, fragment.selection_set, fields, visited)


def directive_variables(node: Any, fragments: Fragments, seen: set[str] | None = None) -> set[str]:
    """The variables an @skip/@include at or below ``node`` reads (fragments followed
    once): a selection's shape depends on these values and on nothing else of a request
    (a literal condition is the same for every request)."""
    seen = set() if seen is None else seen
    found: set[str] = set()
    for directive in getattr(node, "directives", None) or ():
        for argument in directive.arguments or ():
            if isinstance(argument.value, VariableNode):
                found.add(argument.value.name.value)
    if isinstance(node, FragmentSpreadNode):
        if node.name.value not in seen:
            seen.add(node.name.value)
            fragment = fragments.get(node.name.value)
            if fragment is not None:
                found |= directive_variables(fragment, fragments, seen)
        return found
    selection_set = getattr(node, "selection_set", None)
    for child in selection_set.selections if selection_set is not None else ():
        found |= directive_variables(child, fragments, seen)
    return found
