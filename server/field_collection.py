"""Field collection: which fields a selection set asks for.

The part of GraphQL execution's "collect fields" the WebSocket endpoint needs to compile a
`changes` subscription once (the `ChangeBatch` level; ``resolvers/change_json.py`` compiles
the `Change` level), compiled reads need for their root field, and the request metrics need
to label an operation by its root fields: fragments, inline fragments and @skip/@include
applied, fields merged by response key in response order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    VariableNode,
)


def _included(
    node: FieldNode | FragmentSpreadNode | InlineFragmentNode, variables: dict[str, Any]
) -> bool:
    """Evaluate @skip / @include (their `if` is a literal or a variable)."""
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
    return abstract is not None and schema.is_sub_type(abstract, type_)  # type: ignore[arg-type]


def collect_fields(
    schema: GraphQLSchema,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
    type_: GraphQLObjectType,
    selection_sets: Iterable[SelectionSetNode | None],
) -> dict[str, list[FieldNode]]:
    """Response key -> merged field nodes, in response order (fragments and directives applied)."""
    fields: dict[str, list[FieldNode]] = {}
    visited: set[str] = set()

    def walk(selection_set: SelectionSetNode | None) -> None:
        for node in selection_set.selections if selection_set else ():
            if not _included(node, variables):  # type: ignore[arg-type]
                continue
            if isinstance(node, FieldNode):
                key = node.alias.value if node.alias else node.name.value
                fields.setdefault(key, []).append(node)
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition.name.value if node.type_condition else None
                if _applies(schema, condition, type_):
                    walk(node.selection_set)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                fragment = fragments.get(name)
                if name in visited or fragment is None:
                    continue
                visited.add(name)
                if _applies(schema, fragment.type_condition.name.value, type_):
                    walk(fragment.selection_set)

    for selection_set in selection_sets:
        walk(selection_set)
    return fields
