"""Encoder specs: how each GraphQL field of a type is read from the Python value behind it.

A spec is declared next to its strawberry type (``schema/sync.py``, ``schema/customers.py``
...) and is the only statement of that type's conversions: ``resolvers.selection_json``
compiles it into functions writing a selection's JSON directly (the fast path), and
``typed_builder`` below into a function building the strawberry object graphql-core
completes (the ordinary path, and every ``from_row``). Both read a field with the same
expression, so the paths cannot drift apart; tests compare their answers byte for byte.
The specs and this compiler sit in ``schema`` so that types can build themselves from
their specs without importing the resolvers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar, cast

from strawberry.schema.name_converter import NameConverter
from strawberry.types.base import (
    StrawberryList,
    StrawberryOptional,
    get_object_definition,
    has_object_definition,
)
from strawberry.types.enum import StrawberryEnumDefinition
from strawberry.types.private import is_private

T = TypeVar("T")
# What spec expressions may call besides their spec's names.
BUILTINS: Mapping[str, Any] = {"str": str, "list": list}


@dataclass(frozen=True)
class Nested:
    """An object-typed field: ``expression`` gives the object (or, with ``many``, a list)."""

    expression: str
    spec: ObjectSpec
    many: bool = True


@dataclass(frozen=True)
class Serialized:
    """A leaf whose JSON is not the value the typed object holds (dates and times):
    ``expression`` gives that value, ``json`` (a format string, ``{0}`` the value's
    expression) its JSON, as the field's scalar serialises it."""

    expression: str
    json: str

    @property
    def json_expression(self) -> str:
        """The expression of the field's JSON."""
        return self.json.format(f"({self.expression})")


@dataclass(frozen=True, eq=False)
class ObjectSpec:
    """How the JSON of one GraphQL object type is built from the caller's value ``v``.

    ``fields`` maps GraphQL field names to Python expressions over ``v`` (or ``Nested``,
    ``Serialized``); an expression's value is the field's JSON, enum fields giving the
    member's name. ``names`` are the globals the expressions may use besides
    ``BUILTINS``. ``private`` gives the typed object's ``strawberry.Private`` values
    (what its own resolvers read; never JSON).
    """

    name: str
    fields: Mapping[str, str | Nested | Serialized]
    names: Mapping[str, Any] = field(default_factory=dict)
    private: Mapping[str, str] = field(default_factory=dict)


def typed_builder(spec: ObjectSpec, cls: type[T]) -> Callable[[Any], T]:
    """A function building the strawberry object ``cls`` (``spec``'s type) from a value,
    each field read by ``spec``'s expression: the typed path's conversion.

    Every field of ``cls`` without a resolver must be in ``spec`` (fields with one are
    left to it), and every private one in ``spec.private``. A value is passed on as the
    expression gives it (graphql-core's scalars serialise it to what the encoder writes:
    the equivalence tests hold them to it), except enum names, which become members,
    ``Serialized`` leaves, which pass the value before serialisation, and object fields,
    built by their own typed builder from the nested spec.
    """
    return cast("Callable[[Any], T]", _typed_builder(spec, cast("Any", cls)))


_GRAPHQL_NAMES = NameConverter()  # the schema's: snake_case fields as camelCase


@cache
def _typed_builder(spec: ObjectSpec, cls: Any) -> Callable[[Any], Any]:
    definition = get_object_definition(cls, strict=True)
    if definition.name != spec.name:
        raise ValueError(f"the spec of {spec.name} cannot build a {definition.name}")
    names: dict[str, Any] = {"__builtins__": BUILTINS, **spec.names, "_cls": cls}
    arguments = []
    for field_ in definition.fields:
        if field_.base_resolver is not None:
            continue
        if is_private(field_.type):
            if field_.python_name not in spec.private:
                raise ValueError(f"{spec.name}'s private {field_.python_name} is not in its spec")
            arguments.append(f"{field_.python_name}={spec.private[field_.python_name]}")
            continue
        name = _GRAPHQL_NAMES.get_graphql_name(field_)
        member = spec.fields.get(name)
        if member is None:
            raise ValueError(f"{spec.name}.{name} has no expression in its spec")
        if isinstance(member, Nested):
            many = isinstance(_required(field_.type), StrawberryList)
            if member.many != many:
                raise ValueError(f"{spec.name}.{name}: `many` disagrees with the field's type")
            value = _typed_value(field_.type, member.expression, member.spec, names)
        elif isinstance(member, Serialized):
            value = member.expression
        else:
            value = _typed_value(field_.type, member, None, names)
        arguments.append(f"{field_.python_name}={value}")
    source = "lambda v: _cls(" + ", ".join(arguments) + ")"
    return cast("Callable[[Any], Any]", eval(source, names))  # noqa: S307


def _required(type_: object) -> object:
    return type_.of_type if isinstance(type_, StrawberryOptional) else type_


def _typed_value(type_: object, source: str, spec: ObjectSpec | None, names: dict[str, Any]) -> str:
    """Source of the value of a field of ``type_`` from its JSON value ``source``."""
    if isinstance(type_, StrawberryOptional):
        inner = _typed_value(type_.of_type, source, spec, names)
        return source if inner == source else f"(None if ({source}) is None else {inner})"
    if isinstance(type_, StrawberryList):
        inner = _typed_value(type_.of_type, "x", spec, names)
        return source if inner == "x" else f"[{inner} for x in ({source})]"
    helper = f"_typed_{len(names)}"
    if isinstance(type_, StrawberryEnumDefinition):
        # The JSON holds the member's name; graphql-core serialises the member.
        names[helper] = type_.wrapped_cls
        return f"{helper}[{source}]"
    if has_object_definition(type_):
        if spec is None:
            raise ValueError(f"an object field of type {type_} needs a Nested spec")
        names[helper] = _typed_builder(spec, type_)
        return f"{helper}({source})"
    return source
