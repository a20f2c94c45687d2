"""Selections reduced to shapes, shapes compiled to encoders.

graphql-core completes a list of objects field by field in Python; for a pull page of
1,000 changes, a push's 1,000 outcomes or a customer page with its 1,300 records, that is
most of the request's CPU. Instead the client's selection (aliases, fragments,
``__typename``, @skip/@include, applied by ``collect``) is reduced once to a ``Shape``:
(response key, field, nested shape) triples. A function is generated per (type, shape)
that builds one value's JSON object in a single dict display, and orjson encodes the
result. A selection that does not reduce (a field with arguments, a field the type's spec
does not have, one list selected under two keys with different fields) gives ``None``,
and the caller resolves the ordinary way.

An ``ObjectSpec`` (``schema.encoding``, declared next to its type) says how each GraphQL
field of a type is read from the Python value ``v`` the caller holds: a Python expression,
and for object fields the nested spec. ``schema.encoding.typed_builder`` compiles the same
spec into the strawberry object the ordinary path completes, so a type's conversions are
written once and the two paths cannot drift apart. Expressions are fixed source text of
the spec; only response keys come from clients, and they are checked to be GraphQL names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, cast

import orjson
import strawberry
from graphql import FieldNode, GraphQLObjectType, GraphQLSchema

from resolvers.selection_json.collect import Fragments, collect_fields, directive_variables
from schema.encoding import BUILTINS, Nested, ObjectSpec, Serialized

TYPENAME = "__typename"
NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")


# (response key, field name, nested shape or None for a leaf), in response order.
Shape = tuple[tuple[str, str, "Shape | None"], ...]


def _object_type(schema: GraphQLSchema, name: str) -> GraphQLObjectType:
    type_ = schema.get_type(name)
    assert isinstance(type_, GraphQLObjectType), name
    return type_


def shape_of(
    schema: GraphQLSchema,
    spec: ObjectSpec,
    fragments: Fragments,
    variables: Mapping[str, Any],
    nodes: Sequence[FieldNode],
) -> Shape | None:
    """The shape selected by ``nodes`` (fields returning ``spec``'s type, merged as
    execution merges them); None if it can't be reduced to one."""
    collected = collect_fields(
        schema,
        fragments,
        variables,
        _object_type(schema, spec.name),
        [node.selection_set for node in nodes],
    )
    shape: list[tuple[str, str, Shape | None]] = []
    for key, field_nodes in collected.items():
        name = field_nodes[0].name.value
        if any(node.arguments for node in field_nodes):
            return None
        member = TYPENAME if name == TYPENAME else spec.fields.get(name)
        if member is None:
            return None
        if isinstance(member, Nested):
            nested = shape_of(schema, member.spec, fragments, variables, field_nodes)
            if nested is None:
                return None
            shape.append((key, name, nested))
        else:
            shape.append((key, name, None))
    return tuple(shape)


def field_shape(
    schema: GraphQLSchema,
    spec: ObjectSpec,
    fragments: Fragments,
    variables: Mapping[str, Any],
    nodes: Sequence[FieldNode],
    parent: str,
    field_name: str,
) -> Shape | None:
    """The one shape selected on ``field_name`` (a list of ``spec``) of type ``parent``,
    which ``nodes`` return (possibly through a union: fragments on ``parent`` apply).
    None when the field is not selected, or under several keys with different shapes."""
    collected = collect_fields(
        schema,
        fragments,
        variables,
        _object_type(schema, parent),
        [node.selection_set for node in nodes],
    )
    shapes = {
        shape_of(schema, spec, fragments, variables, field_nodes)
        for field_nodes in collected.values()
        if field_nodes[0].name.value == field_name
    }
    if len(shapes) != 1:
        return None
    return shapes.pop()


@lru_cache(maxsize=512)
def builder(spec: ObjectSpec, shape: Shape) -> Callable[[Any], dict[str, Any]]:
    """One function per (type, shape) building a value's object in a single dict display.

    A generic loop over (key, getter) pairs costs a call per field and value; this costs
    none (nested lists call their own builder once per item).
    """
    names: dict[str, Any] = {"__builtins__": BUILTINS, **spec.names}
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
        elif isinstance(member, Serialized):
            items.append(f"{key!r}: {member.json_expression}")
        else:
            items.append(f"{key!r}: {member}")
    source = "lambda v: {" + ", ".join(items) + "}"
    return cast("Callable[[Any], dict[str, Any]]", eval(source, names))  # noqa: S307


def encode(spec: ObjectSpec, shape: Shape, values: Sequence[Any]) -> bytes:
    """``values`` as a JSON array of objects in ``shape``."""
    return orjson.dumps(list(map(builder(spec, shape), values)))


# Shapes by the AST nodes of the field they were computed for. The parser cache hands out
# the same document (so the same nodes) for the same query text, and collecting a
# selection each request cost as much as encoding a small answer.
_SHAPES: dict[tuple[object, ...], tuple[tuple[FieldNode, ...], Shape | None]] = {}
_SHAPES_MAX = 1024


def resolver_field_shape(
    info: strawberry.Info[Any, Any], spec: ObjectSpec, parent: str, field_name: str
) -> Shape | None:
    """:func:`field_shape` of the field a resolver is resolving, remembered for this
    field of this document when no @skip/@include of it reads a variable."""
    raw = info._raw_info  # the AST nodes strawberry's Info wraps
    nodes = tuple(raw.field_nodes)
    key = (spec, field_name, *map(id, nodes))
    hit = _SHAPES.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], nodes, strict=True)):
        return hit[1]
    # The coerced values at run time (graphql-core's annotation names a wrapper type).
    variables = cast("Mapping[str, Any]", raw.variable_values)
    shape = field_shape(raw.schema, spec, raw.fragments, variables, nodes, parent, field_name)
    if not any(directive_variables(node, raw.fragments) for node in nodes):
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        # The nodes are kept with the shape, so their ids cannot be reused meanwhile.
        _SHAPES[key] = (nodes, shape)
    return shape
