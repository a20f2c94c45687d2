"""Input objects built by a converter planned once per type, not resolved per value.

Strawberry turns every argument into input objects field by field, resolving each field's
type and GraphQL name again for every value: for a push of 1,000 changes that was ~100 ms,
more than deciding them. A type passed to ``convert_by_plan`` builds its values with a
converter planned once per type (the ``from_input`` hook of its definition), which does
what strawberry's ``convert_argument`` does for the shapes it knows and hands anything else
(Maybe, lazy, generic, GlobalID or self-building types) back to strawberry. The objects are
the same (``tests/api/test_push_input.py`` compares them); only the per-value type
resolution is gone.

A variable holding a list of such a type (``$changes: [ChangeInput!]!``) is also coerced
by a plan (``PlannedInputsExecutionContext``): graphql-core's coercion of the variable
(which walks every field of every input type of every item, defaults included) and
strawberry's conversion fused into one pass that builds the objects directly. The plan
only takes values graphql-core would coerce without error, to the same objects; for
anything else (a wrong type, a missing or unknown field, a null where none may be, a list
given as one item, a scalar refusing its value) it steps aside and graphql-core coerces
the variable as before, so every error message is graphql-core's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from graphql import (
    DocumentNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    GraphQLSchema,
    ListTypeNode,
    NonNullTypeNode,
    OperationDefinitionNode,
    TypeNode,
    Undefined,
    specified_scalar_types,
    type_from_ast,
)
from graphql.execution.executor import Executor
from graphql.type import is_required_input_field
from graphql.utilities.coerce_input_value import coerce_default_value
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

from schema.preencoded import FieldsyncExecutionContext

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
    if type(value) is cls:
        # Built already, by the plan of the variable it came in (PlannedInputsExecutionContext).
        return value
    return _object_converter(cls, context)(value, context)


# Input types whose list variables are coerced by a plan (see the module docstring).
_PLANNED_VARIABLES: set[type] = set()


def convert_by_plan(cls: type) -> None:
    """Build ``cls`` (a strawberry input type) from arguments with a converter planned once,
    and coerce variables holding lists of it with a plan too."""
    cls.__strawberry_definition__.from_input = planned_from_input  # type: ignore[attr-defined]
    _PLANNED_VARIABLES.add(cls)


# --------------------------------------------------------------------- planned variables

# What a coercer returns for a value graphql-core would not coerce (or the plan does not
# know): the variable is then left to graphql-core, which reports the error.
_REFUSED: Any = object()
_Coercer = Callable[[Any], Any]
_BACKREF = "strawberry-definition"
# Plans by type: a wrapped type by its printed form (graphql-core builds a new wrapper for
# every variable definition it reads), a named type by itself.
_COERCERS: dict[tuple[str, object], _Coercer | None] = {}


class _UnplannableError(Exception):
    """A type the plan does not cover; its variables are coerced by graphql-core."""


def variable_coercer(type_: GraphQLInputType) -> _Coercer | None:
    """A function from a variable's JSON value to the value graphql-core's coercion and
    strawberry's conversion make of it, or ``_REFUSED`` where graphql-core would report an
    error; None when a type it holds is not planned."""
    named: Any = type_
    while isinstance(named, GraphQLNonNull | GraphQLList):
        named = named.of_type
    key = (str(type_), named)
    if key not in _COERCERS:
        try:
            coerce = _coercer(type_, {})
        except _UnplannableError:
            _COERCERS[key] = None
        else:
            nullable = _nullable(type_)
            _COERCERS[key] = lambda value: (
                (None if nullable else _REFUSED) if value is None else coerce(value)
            )
    return _COERCERS[key]


def _coercer(type_: GraphQLInputType, objects: dict[str, _Coercer]) -> _Coercer:
    """graphql-core's ``coerce_input_value`` of a non-null value of ``type_``, fused with
    strawberry's conversion (nulls are the caller's: ``_nullable``).

    Refuses rather than coerces whatever graphql-core treats specially (a non-list value
    given for a list, Undefined values, dict subclasses, an Int given as 1.0, an ID as a
    number): graphql-core then does it.
    """
    if isinstance(type_, GraphQLNonNull):
        return _coercer(type_.of_type, objects)
    if isinstance(type_, GraphQLList):
        item = _coercer(type_.of_type, objects)
        items_nullable = not isinstance(type_.of_type, GraphQLNonNull)

        def coerce_list(value: Any) -> Any:
            if type(value) is not list:
                return _REFUSED
            coerced: list[Any] = []
            append = coerced.append
            for element in value:
                if element is None:
                    if not items_nullable:
                        return _REFUSED
                    append(None)
                    continue
                got = item(element)
                if got is _REFUSED:
                    return _REFUSED
                append(got)
            return coerced

        return coerce_list
    if isinstance(type_, GraphQLInputObjectType):
        return _object_coercer(type_, objects)
    if isinstance(type_, GraphQLEnumType):
        return _enum_coercer(type_)
    if isinstance(type_, GraphQLScalarType):
        return _scalar_coercer(type_)
    raise _UnplannableError(str(type_))


def _nullable(type_: GraphQLInputType) -> bool:
    return not isinstance(type_, GraphQLNonNull)


# The values graphql-core's own scalars take as they are (their coercion returns them
# unchanged); anything else is left to graphql-core.
_INT_RANGE = range(-(2**31), 2**31)
_SPECIFIED: dict[str, Callable[[Any], bool]] = {
    "String": lambda value: type(value) is str,
    "ID": lambda value: type(value) is str,
    "Boolean": lambda value: type(value) is bool,
    "Int": lambda value: type(value) is int and value in _INT_RANGE,
}


def _scalar_coercer(type_: GraphQLScalarType) -> _Coercer:
    if type_.name in _SPECIFIED and specified_scalar_types.get(type_.name) is type_:
        takes = _SPECIFIED[type_.name]
        return lambda value: value if takes(value) else _REFUSED
    # A custom scalar: graphql-core's own coercion of it (strawberry keeps what it returns).
    coerce = type_.coerce_input_value

    def coerce_scalar(value: Any) -> Any:
        try:
            got = coerce(value)
        except Exception:  # noqa: BLE001 - graphql-core takes any error as "invalid"
            return _REFUSED
        return _REFUSED if got is Undefined else got

    return coerce_scalar


def _enum_coercer(type_: GraphQLEnumType) -> _Coercer:
    # Each name's value as graphql-core (and strawberry's enum type) coerce it, once.
    members = {name: type_.coerce_input_value(name) for name in type_.values}
    return lambda value: members.get(value, _REFUSED) if type(value) is str else _REFUSED


def _attributes(cls: type) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """What a new object of ``cls`` starts from, before its fields' values are set.

    ``template``: every attribute, in the dataclass's order (the order ``vars`` gives, which
    patches keep), at its default, or None where strawberry passes an implicit None (the
    caller adds the fields graphql-core gives a null default). The plan sets those
    attributes without __init__, unless the class needs it (a default factory,
    __post_init__, slots: the flag): then it passes the arguments strawberry would pass,
    ``passed`` (the implicit Nones and null defaults) and the fields given.
    """
    template: dict[str, Any] = {}
    passed: dict[str, Any] = {}
    built_by_init = hasattr(cls, "__post_init__") or hasattr(cls, "__slots__")
    for f in dataclasses.fields(cls):
        if not f.init or f.default_factory is not dataclasses.MISSING:
            built_by_init = True
        template[f.name] = None if f.default is dataclasses.MISSING else f.default
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            passed[f.name] = None
    return template, passed, built_by_init


def _object_coercer(type_: GraphQLInputObjectType, objects: dict[str, _Coercer]) -> _Coercer:
    if type_.name in objects:
        return objects[type_.name]
    definition = type_.extensions.get(_BACKREF)
    if (
        not isinstance(definition, StrawberryObjectDefinition)
        or definition.from_input not in (None, planned_from_input)
        or definition.is_graphql_generic
    ):
        raise _UnplannableError(type_.name)
    # graphql-core hands every coerced object to the type's ``out_type``: the plan knows
    # the default (the object as it is) and strawberry's one-of check, which raises for
    # anything but exactly one non-null field; the plan refuses those values instead, and
    # graphql-core raises as before.
    one_of = type_.is_one_of or definition.is_one_of
    out_type = type_.out_type
    if out_type is not GraphQLInputObjectType.out_type and not (
        definition.is_one_of and getattr(out_type, "__name__", None) == "check_one_of"
    ):
        raise _UnplannableError(type_.name)
    cls = definition.origin
    template, passed, built_by_init = _attributes(cls)
    by_name: dict[str, tuple[str, _Coercer, bool]] = {}
    required: set[str] = set()
    new = object.__new__

    def coerce_object(value: Any) -> Any:
        if type(value) is not dict:
            return _REFUSED
        attributes = dict(passed if built_by_init else template)
        for name, given in value.items():
            found = by_name.get(name)
            if found is None:
                return _REFUSED
            if given is None:
                if not found[2]:
                    return _REFUSED
                attributes[found[0]] = None
                continue
            got = found[1](given)
            if got is _REFUSED:
                return _REFUSED
            attributes[found[0]] = got
        if required and not required <= value.keys():
            return _REFUSED
        if one_of and (len(value) != 1 or attributes[by_name[next(iter(value))][0]] is None):
            return _REFUSED
        if built_by_init:
            return cls(**attributes)
        built = new(cls)
        built.__dict__ = attributes
        return built

    # Registered before its fields are planned: a field may refer back to this type.
    objects[type_.name] = coerce_object
    for name, field in type_.fields.items():
        strawberry_field = field.extensions.get(_BACKREF)
        python_name = getattr(strawberry_field, "python_name", None)
        if (
            not isinstance(python_name, str)
            or python_name not in template
            or not _converts_plainly(strawberry_field.resolve_type(type_definition=definition))
        ):
            raise _UnplannableError(f"{type_.name}.{name}")
        default = coerce_default_value(field)
        if default is None:
            # The plan takes only null defaults (all the planned types have).
            template[python_name] = passed[python_name] = None
        elif default is not Undefined:
            raise _UnplannableError(f"{type_.name}.{name}")
        if is_required_input_field(field):
            required.add(name)
        by_name[name] = (python_name, _coercer(field.type, objects), _nullable(field.type))
    if set(template) != {n for n, _, _ in by_name.values()}:
        # An attribute no GraphQL field sets (or the other way round): not planned.
        raise _UnplannableError(type_.name)
    return coerce_object


def _converts_plainly(type_: object) -> bool:
    """Whether strawberry converts a field of ``type_`` as the plan does: leaves kept as
    graphql-core coerced them, input objects built from their fields (no Maybe, lazy type
    or GlobalID, which strawberry decodes itself)."""
    while isinstance(type_, StrawberryOptional | StrawberryList):
        if isinstance(type_, StrawberryMaybe):
            return False
        type_ = type_.of_type
    return type_ is not GlobalID and not isinstance(type_, LazyType | StrawberryMaybe)


def _is_list(node: TypeNode) -> bool:
    return isinstance(node.type if isinstance(node, NonNullTypeNode) else node, ListTypeNode)


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    """The operation graphql-core will run (None where it will refuse the request)."""
    found = None
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        if name is None:
            if found is not None:
                return None
            found = definition
        elif definition.name is not None and definition.name.value == name:
            found = definition
    return found


def planned_variables(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: Mapping[str, Any] | None,
    operation_name: str | None,
) -> dict[str, Any]:
    """The variables of the operation that hold lists of a planned type, coerced by the
    plan: only those graphql-core would coerce without error, to the same objects."""
    if not variables or not _PLANNED_VARIABLES:
        return {}
    operation = _operation(document, operation_name)
    if operation is None:
        return {}
    planned: dict[str, Any] = {}
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        value = variables.get(name, Undefined)
        if value is Undefined or not _is_list(definition.type):
            continue
        type_ = type_from_ast(schema, definition.type)
        named: Any = type_
        while isinstance(named, GraphQLNonNull | GraphQLList):
            named = named.of_type
        origin = getattr(named.extensions.get(_BACKREF) if named else None, "origin", None)
        if origin not in _PLANNED_VARIABLES or type_ is None:
            continue
        coerce = variable_coercer(type_)  # type: ignore[arg-type]  # an input type: the origin is an input
        if coerce is None:
            continue
        try:
            coerced = coerce(value)
        except RecursionError:
            # graphql-core reports "nested too deeply" itself.
            continue
        if coerced is not _REFUSED:
            planned[name] = coerced
    return planned


class PlannedInputsExecutionContext(FieldsyncExecutionContext):
    """The schema's execution context, coercing list variables of planned input types by
    their plan (see the module docstring); every other variable as graphql-core does."""

    @classmethod
    def build(
        cls,
        schema: GraphQLSchema,
        document: DocumentNode,
        root_value: Any = None,
        context_value: Any = None,
        raw_variable_values: dict[str, Any] | None = None,
        operation_name: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> list[GraphQLError] | Executor[Any]:
        """graphql-core's ``build``, given an empty list in place of each planned variable
        (valid for any list type, and coerced at no cost), its plan's value put back after."""
        planned = planned_variables(schema, document, raw_variable_values, operation_name)
        variables = raw_variable_values
        if planned and raw_variable_values is not None:
            variables = {**raw_variable_values, **{name: [] for name in planned}}
        built = super().build(
            schema,
            document,
            root_value,
            context_value,
            variables,
            operation_name,
            *args,
            **kwargs,
        )
        if planned and not isinstance(built, list):
            values = built.variable_values
            for name, value in planned.items():
                values.coerced[name] = value
                # The source keeps what the client sent, as graphql-core keeps it.
                values.sources[name] = values.sources[name]._replace(
                    value=raw_variable_values[name]  # type: ignore[index]
                )
        return built
