"""Selections compiled to encoders: long lists answered without graphql-core's completion.

graphql-core completes a list of objects field by field in Python; for a pull page of 1,000
changes, or the 1,000 outcomes of a push, that is most of the request's CPU. For such a
list the client's selection (aliases, fragments, ``__typename``, ``@skip``/``@include``)
is reduced once to a ``Shape``: (response key, field, nested shape) triples. A function is
generated per (type, shape) that builds one value's JSON object in a single dict display,
and orjson encodes the list; the resolver returns it as ``schema.preencoded.PreEncoded``.
A selection this module does not reduce (another directive, two aliases of the list with
different fields) gives ``None``, and the caller resolves the ordinary way.

An ``ObjectSpec`` says how each GraphQL field of a type is read from the Python value
``v`` the resolver holds: a Python expression (the same conversions the typed resolver
applies), and for object fields the nested spec. Expressions are fixed source text of the
spec; only response keys come from clients, and they are checked to be GraphQL names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, cast

import orjson
import strawberry
from graphql import FieldNode, FragmentDefinitionNode, FragmentSpreadNode, GraphQLResolveInfo
from strawberry.types.nodes import (
    FragmentSpread,
    InlineFragment,
    SelectedField,
    Selection,
    convert_selections,
)

TYPENAME = "__typename"
NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")


@dataclass(frozen=True)
class Nested:
    """An object-typed field: ``expression`` gives the object (or, with ``many``, a list)."""

    expression: str
    spec: ObjectSpec
    many: bool = True


@dataclass(frozen=True, eq=False)
class ObjectSpec:
    """How the JSON of one GraphQL object type is built from the resolver's value ``v``."""

    name: str
    fields: Mapping[str, str | Nested]
    names: Mapping[str, Any] = field(default_factory=dict)


# (response key, field name, nested shape or None for a leaf), in response order.
Shape = tuple[tuple[str, str, "Shape | None"], ...]


def shape_of(spec: ObjectSpec, selections: Iterable[Selection]) -> Shape | None:
    """The shape of a selection set on ``spec``'s type; None if it can't be reduced."""
    by_key: dict[str, tuple[str, list[Selection]]] = {}
    if not _collect(spec.name, selections, by_key):
        return None
    shape: list[tuple[str, str, Shape | None]] = []
    for key, (name, sub_selections) in by_key.items():
        member = TYPENAME if name == TYPENAME else spec.fields.get(name)
        if member is None:
            return None
        if isinstance(member, Nested):
            nested = shape_of(member.spec, sub_selections)
            if nested is None:
                return None
            shape.append((key, name, nested))
        else:
            shape.append((key, name, None))
    return tuple(shape)


def selected_shape(spec: ObjectSpec, fields: Iterable[Selection]) -> Shape | None:
    """The shape selected on a field returning ``spec``'s type (``info.selected_fields`` of
    its resolver: the field's nodes, merged as execution merges them)."""
    selections: list[Selection] = []
    for selected in fields:
        if not isinstance(selected, SelectedField):
            return None
        selections.extend(selected.selections)
    return shape_of(spec, selections)


def nested_shape(
    spec: ObjectSpec, fields: Iterable[Selection], parent: str, field_name: str
) -> Shape | None:
    """The one shape the client selected on ``field_name`` (a list of ``spec``) of ``parent``.

    ``fields`` are the selections of the field returning ``parent`` (``info.selected_fields``
    of its resolver); ``parent`` may be reached through fragments (a union member).
    Selections under one response key merge, as in execution. None when the field is not
    selected, or under several keys with different shapes.
    """
    by_key: dict[str, tuple[str, list[Selection]]] = {}
    for selected in fields:
        if isinstance(selected, SelectedField) and not _collect(
            parent, selected.selections, by_key
        ):
            return None
    shapes = {shape_of(spec, sub) for name, sub in by_key.values() if name == field_name}
    if len(shapes) != 1:
        return None
    return shapes.pop()


def compile_shape(
    spec: ObjectSpec,
    fragments: dict[str, FragmentDefinitionNode],
    variable_values: dict[str, Any],
    field_nodes: Sequence[FieldNode],
) -> Shape | None:
    """The shape of ``field_nodes`` (fields returning ``spec``'s type, merged) outside a
    resolver: for code that holds a parsed, validated document (the WebSocket endpoint).
    strawberry's selection converter needs only these two attributes of an info."""
    info = cast(
        "GraphQLResolveInfo[Any]",
        SimpleNamespace(fragments=fragments, variable_values=variable_values),
    )
    selections: list[Selection] = []
    for selected in convert_selections(info, field_nodes):
        selections.extend(cast("SelectedField", selected).selections)
    return shape_of(spec, selections)


def encode(spec: ObjectSpec, shape: Shape, values: Sequence[Any]) -> bytes:
    """``values`` as a JSON array of objects in ``shape``."""
    return orjson.dumps(list(map(builder(spec, shape), values)))


@lru_cache(maxsize=512)
def builder(spec: ObjectSpec, shape: Shape) -> Callable[[Any], dict[str, Any]]:
    """One function per (type, shape) building a value's object in a single dict display.

    A generic loop over (key, getter) pairs costs a call per field and value; this costs
    none (nested lists call their own builder once per item).
    """
    names: dict[str, Any] = {"__builtins__": {"str": str, "list": list}, **spec.names}
    items = []
    for key, name, nested in shape:
        if not NAME.fullmatch(key):
            raise ValueError(f"{key!r} is not a GraphQL name")
        if name == TYPENAME:
            items.append(f"{key!r}: {spec.name!r}")
            continue
        member = spec.fields[name]
        if isinstance(member, Nested):
            assert nested is not None
            helper = f"_build_{len(names)}"
            names[helper] = builder(member.spec, nested)
            value = (
                f"[{helper}(x) for x in ({member.expression})]"
                if member.many
                else f"(None if ({member.expression}) is None else {helper}({member.expression}))"
            )
            items.append(f"{key!r}: {value}")
        else:
            items.append(f"{key!r}: {member}")
    source = "lambda v: {" + ", ".join(items) + "}"
    return cast("Callable[[Any], dict[str, Any]]", eval(source, names))  # noqa: S307


# Shapes by the AST nodes of the field they were computed for. The parser cache hands out
# the same document (so the same nodes) for the same query text, and converting a
# selection to strawberry's objects each request cost as much as encoding a small answer.
_SHAPES: dict[tuple[object, ...], tuple[tuple[FieldNode, ...], Shape | None]] = {}
_SHAPES_MAX = 1024


def cached_shape(
    info: strawberry.Info[Any, Any], kind: str, compute: Callable[[], Shape | None]
) -> Shape | None:
    """``compute()``, remembered for this field of this document when the selection holds
    no directives (``@skip``/``@include`` make it depend on the variables)."""
    raw = info._raw_info  # the AST nodes strawberry's Info wraps
    nodes = tuple(raw.field_nodes)
    key = (kind, *map(id, nodes))
    hit = _SHAPES.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], nodes, strict=True)):
        return hit[1]
    shape = compute()
    if not any(has_directives(node, raw.fragments, set()) for node in nodes):
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        # The nodes are kept with the shape, so their ids cannot be reused meanwhile.
        _SHAPES[key] = (nodes, shape)
    return shape


def has_directives(
    node: Any, fragments: Mapping[str, FragmentDefinitionNode], seen: set[str]
) -> bool:
    """Whether ``node`` or anything below it (fragments followed once) has a directive."""
    if getattr(node, "directives", None):
        return True
    if isinstance(node, FragmentSpreadNode):
        if node.name.value in seen:
            return False
        seen.add(node.name.value)
        fragment = fragments.get(node.name.value)
        return fragment is not None and has_directives(fragment, fragments, seen)
    selection_set = getattr(node, "selection_set", None)
    if selection_set is None:
        return False
    return any(has_directives(child, fragments, seen) for child in selection_set.selections)


def _included(directives: Mapping[str, Mapping[str, Any]]) -> bool | None:
    """``@skip``/``@include`` as graphql-core applies them; None for any other directive."""
    for name, arguments in directives.items():
        if name == "skip":
            if arguments.get("if"):
                return False
        elif name == "include":
            if not arguments.get("if"):
                return False
        else:
            return None
    return True


def _collect(
    type_name: str,
    selections: Iterable[Selection],
    by_key: dict[str, tuple[str, list[Selection]]],
) -> bool:
    """Group ``selections`` on ``type_name`` by response key, in document order.

    Fragments for other types are skipped (they can't apply to this object type); False
    when a directive other than @skip/@include (or a field argument) is met.
    """
    for selection in selections:
        included = _included(selection.directives)
        if included is None:
            return False
        if not included:
            continue
        if isinstance(selection, SelectedField):
            if selection.arguments:
                return False
            key = selection.alias or selection.name
            _, sub = by_key.setdefault(key, (selection.name, []))
            sub.extend(selection.selections)
        elif (
            isinstance(selection, FragmentSpread | InlineFragment)
            and selection.type_condition in (None, type_name)
            and not _collect(type_name, selection.selections, by_key)
        ):
            return False
    return True
