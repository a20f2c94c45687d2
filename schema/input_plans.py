"""Input objects built by a converter planned once per type, not resolved per value.

Strawberry turns every argument into input objects field by field, resolving each field's
type and GraphQL name again for every value: for a push of 1,000 changes that was ~100 ms,
more than deciding them. A type passed to ``convert_by_plan`` builds its values with a
converter planned once per type (the ``from_input`` hook of its definition), which does
what strawberry's ``convert_argument`` does for the shapes it knows and hands anything else
(Maybe, lazy, generic, GlobalID or self-building types) back to strawberry. The objects are
the same (``tests/api/test_push_input.py`` compares them); only the per-value type
resolution is gone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from strawberry.relay.types import GlobalID
from strawberry.scalars import is_scalar
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryObjectDefinition,
    StrawberryOptional,
    has_object_definition,
)
from strawberry.types.enum import StrawberryEnumDefinition, has_enum_definition
from strawberry.types.lazy_type import LazyType
from strawberry.types.unset import UNSET

_InputConverter = Callable[[Any, InputContext], Any]
_PLANS: dict[tuple[object, int], _InputConverter | None] = {}
_OBJECTS: dict[tuple[type, int], _InputConverter] = {}


def _is_leaf(type_: object, context: InputContext) -> bool:
    return isinstance(type_, StrawberryEnumDefinition) or (
        type_ is not GlobalID and is_scalar(type_, context.scalar_registry)
    )


def _converter(type_: object, context: InputContext) -> _InputConverter | None:
    """What `convert_argument` does for a value of ``type_``; None when it keeps the value."""
    key = (type_, id(context.config))
    if key not in _PLANS:
        _PLANS[key] = _plan(type_, context)
    return _PLANS[key]


def _fallback(type_: Any) -> _InputConverter:
    return lambda value, context: context.convert(value, type_)


def _plan(type_: Any, context: InputContext) -> _InputConverter | None:
    if isinstance(type_, StrawberryMaybe | LazyType):
        return _fallback(type_)
    if isinstance(type_, StrawberryOptional):
        return _converter(type_.of_type, context)
    if isinstance(type_, StrawberryList):
        inner = _converter(type_.of_type, context)
        if inner is None:
            # Strawberry copies lists: graphql-core may share a default between requests.
            return lambda value, _: value if value is None or value is UNSET else list(value)
        return lambda value, ctx: (
            value if value is None or value is UNSET else [inner(item, ctx) for item in value]
        )
    if _is_leaf(type_, context) or has_enum_definition(type_):
        return None
    if not has_object_definition(type_):
        return _fallback(type_)
    definition = type_.__strawberry_definition__
    if definition.from_input is not None or definition.is_graphql_generic:
        return _fallback(type_)
    return _object_converter(type_, context)


def _object_converter(cls: type, context: InputContext) -> _InputConverter:
    key = (cls, id(context.config))
    if key not in _OBJECTS:
        _OBJECTS[key] = _plan_object(cls, cls.__strawberry_definition__, context)  # type: ignore[attr-defined]
    return _OBJECTS[key]


def _plan_object(
    cls: type, definition: StrawberryObjectDefinition, context: InputContext
) -> _InputConverter:
    # Fields without a default are None unless given, as Strawberry builds inputs.
    implicit = {
        f.python_name: None
        for f in definition.fields
        if f.default_value is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    fields: list[tuple[str, str, _InputConverter | None]] = []

    def build(value: Any, ctx: InputContext) -> Any:
        if value is None or value is UNSET:
            return value
        if not fields and definition.fields:
            # Planned on first use, not when planning the parent: a field may refer back.
            for f in definition.fields:
                fields.append(
                    (
                        ctx.config.name_converter.from_field(f),
                        f.python_name,
                        _converter(f.resolve_type(type_definition=definition), ctx),
                    )
                )
        kwargs = dict(implicit)
        for name, python_name, convert in fields:
            if name in value:
                item = value[name]
                kwargs[python_name] = item if convert is None else convert(item, ctx)
        return cls(**kwargs)

    return build


def planned_from_input(cls: type, value: Mapping[str, Any], context: InputContext) -> Any:
    """A ``from_input`` hook that builds ``cls`` from its planned converter."""
    return _object_converter(cls, context)(value, context)


def convert_by_plan(cls: type) -> None:
    """Build ``cls`` (a strawberry input type) from arguments with a converter planned once."""
    cls.__strawberry_definition__.from_input = planned_from_input  # type: ignore[attr-defined]
