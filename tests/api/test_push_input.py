"""pushChanges' ChangeInput conversion (schema/input_plans.py) builds what Strawberry builds,
and its planned `changes` variables what graphql-core and strawberry build."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from graphql import GraphQLError, GraphQLList, GraphQLNonNull, Undefined, coerce_input_value, parse
from hypothesis import given, settings
from hypothesis import strategies as st
from strawberry.types.arguments import InputContext, convert_argument
from strawberry.types.base import StrawberryList

from db.errors import RecordValidationError
from resolvers.sync import to_push_change
from schema.input_plans import _REFUSED as REFUSED
from schema.input_plans import planned_from_input, planned_variables, variable_coercer
from schema.sync import ChangeInput
from server.schema import build_schema
from tests.api.sync_client import PUSH

CHANGES: list[dict[str, Any]] = [
    {
        "clientMutationId": "a",
        "recordId": "0b7a3c56-8f43-4a51-9d6e-0b1f2c3d4e5f",
        "op": "UPSERT",
        "baseVersion": {"server": 2, "phone-1": 1},
        "counter": 1,
        "patch": {
            "customer": {
                "notificationEmails": ["a@example.com"],
                "phones": [{"type": "MOBILE", "number": "+1 555 0100"}],
                "email": None,
                "customFields": {"color": {"nested": [1, "x"]}, "size": None},
            }
        },
    },
    {
        "clientMutationId": "b",
        "recordId": "0b7a3c56-8f43-4a51-9d6e-0b1f2c3d4e60",
        "op": "UPSERT",
        "counter": 2,
        "patch": {
            "contact": {
                "customerId": "0b7a3c56-8f43-4a51-9d6e-0b1f2c3d4e5f",
                "firstName": "Ada",
                "phones": None,
            }
        },
    },
    {
        "clientMutationId": "c",
        "recordId": "0b7a3c56-8f43-4a51-9d6e-0b1f2c3d4e61",
        "op": "DELETE",
        "baseVersion": None,
        "counter": 3,
        "patch": {"asset": {"installDate": "2024-02-29", "notes": "gone"}},
    },
    {
        "clientMutationId": "d",
        "recordId": "0b7a3c56-8f43-4a51-9d6e-0b1f2c3d4e62",
        "op": "UPSERT",
        "counter": 4,
        "patch": {
            "asset": {
                "facilityId": "0b7a3c56-8f43-4a51-9d6e-0b1f2c3d4e63",
                "customerId": "0b7a3c56-8f43-4a51-9d6e-0b1f2c3d4e5f",
                "customFields": [{"key": "color", "value": "red"}],
            }
        },
    },
]


@pytest.mark.parametrize("change", CHANGES, ids=[c["clientMutationId"] for c in CHANGES])
def test_same_objects_as_strawberry(change: dict[str, Any]) -> None:
    """The planned converter and Strawberry's generic one agree, nested inputs included."""
    schema = build_schema()
    graphql_type = schema._schema.type_map["ChangeInput"]
    coerced = coerce_input_value(change, graphql_type)
    context = InputContext(
        info=None,
        config=schema.config,
        scalar_registry=schema.schema_converter.scalar_registry,
        path=(),
    )
    fast = planned_from_input(ChangeInput, coerced, context)
    definition = ChangeInput.__strawberry_definition__  # type: ignore[attr-defined]
    hook = definition.from_input
    definition.from_input = None
    try:
        generic = convert_argument(coerced, ChangeInput, context.scalar_registry, schema.config)
    finally:
        definition.from_input = hook
    assert fast == generic
    assert type(fast.patch) is type(generic.patch)
    assert to_push_change(fast) == to_push_change(generic)


def test_hook_is_installed() -> None:
    """Importing the resolvers installs the hook on the schema's ChangeInput."""
    assert ChangeInput.__strawberry_definition__.from_input is planned_from_input  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- planned variables
#
# A `[ChangeInput!]!` variable is coerced by a plan (schema/input_plans.py) instead of
# graphql-core + strawberry. The plan must build the very objects they build (attribute
# order included: patches keep it), and must refuse every value graphql-core refuses, so
# that graphql-core reports the error as before. It may refuse more (it then steps aside).

SCHEMA = build_schema()
CHANGES_TYPE = GraphQLNonNull(GraphQLList(GraphQLNonNull(SCHEMA._schema.type_map["ChangeInput"])))
UUIDS = st.uuids().map(str)
# Plain JSON values and the odd ones graphql-core coerces specially (an Int as 1.0, an ID
# as a number, a list as one item) or refuses.
texts = st.one_of(st.text(max_size=4), st.sampled_from(["", "a\x00b", "MOBILE"]))
odd = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.just(1.0), st.just(2**40), texts)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=2), st.dictionaries(texts, inner, max_size=2)),
    max_leaves=4,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``valid``, sometimes anything."""
    return st.one_of(valid, valid, valid, odd)


def listed(item: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A list of ``item`` (or one given bare, or a null in it)."""
    return st.one_of(st.lists(item, max_size=2), item, st.lists(st.none(), min_size=1, max_size=1))


phones = st.fixed_dictionaries(
    {}, optional={"type": maybe(st.sampled_from(["MOBILE", "FAX", "CELL"])), "number": maybe(texts)}
)
addresses = st.fixed_dictionaries(
    {"type": maybe(st.sampled_from(["BILL_TO", "SHIP_TO", "HOME"]))},
    optional={name: maybe(texts) for name in ("line1", "city", "postalCode", "country")},
)
settings_input = st.dictionaries(
    st.sampled_from(["taxFree", "taxRate", "smsEnabled", "noEmail", "nope"]),
    st.one_of(st.booleans(), st.integers(-5, 200), st.floats(allow_nan=False), texts, st.none()),
    max_size=3,
)
customer = st.fixed_dictionaries(
    {},
    optional={
        "businessName": maybe(texts),
        "email": maybe(texts),
        "phones": st.one_of(st.none(), listed(phones)),
        "addresses": st.one_of(st.none(), listed(addresses)),
        "notificationEmails": st.one_of(st.none(), listed(texts)),
        "settings": st.one_of(st.none(), settings_input),
        "customFields": json_values,
        "nickname": texts,
    },
)
contact = st.fixed_dictionaries(
    {},
    optional={
        "firstName": maybe(texts),
        "phones": st.one_of(st.none(), listed(phones)),
        "customerId": maybe(UUIDS),
        "customFields": json_values,
    },
)
facility = st.fixed_dictionaries(
    {},
    optional={
        "name": maybe(texts),
        "address": st.one_of(st.none(), st.dictionaries(texts, texts, max_size=2)),
        "customerId": maybe(UUIDS),
    },
)
asset = st.fixed_dictionaries(
    {},
    optional={
        "kind": maybe(texts),
        "installDate": maybe(st.sampled_from(["2024-02-29", "2023-02-29", "x"])),
        "facilityId": maybe(UUIDS),
        "customerId": maybe(UUIDS),
    },
)
patches = st.one_of(
    st.fixed_dictionaries({"customer": customer}),
    st.fixed_dictionaries({"contact": contact}),
    st.fixed_dictionaries({"facility": facility}),
    st.fixed_dictionaries({"asset": asset}),
    st.dictionaries(
        st.sampled_from(["customer", "contact", "asset", "other"]),
        st.one_of(st.none(), st.just({})),
        max_size=2,
    ),
)
changes = st.fixed_dictionaries(
    {},
    optional={
        "clientMutationId": maybe(texts),
        "recordId": maybe(UUIDS),
        "op": maybe(st.sampled_from(["UPSERT", "DELETE", "upsert"])),
        "baseVersion": maybe(st.dictionaries(texts, st.integers(-1, 2**33), max_size=2)),
        "counter": maybe(st.integers(-1, 2**31)),
        "patch": maybe(patches),
        "resolvesConflictId": maybe(UUIDS),
        "clientId": texts,
    },
)


def reference(value: Any) -> Any:
    """What graphql-core and strawberry make of the variable: their objects, or None for an
    error (graphql-core's Undefined, or strawberry's one-of check raising)."""
    try:
        coerced = coerce_input_value(value, CHANGES_TYPE)
    except GraphQLError:
        return None
    if coerced is Undefined:
        return None
    context = SCHEMA.schema_converter.scalar_registry
    return convert_argument(coerced, StrawberryList(ChangeInput), context, SCHEMA.config)


def ordered(value: Any) -> Any:
    """``value`` with every object as its type and attributes in order (== ignores order)."""
    if isinstance(value, list):
        return [ordered(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, [(k, ordered(v)) for k, v in vars(value).items()])
    return value


@given(st.one_of(st.lists(changes, max_size=3), changes, st.none()))
@settings(max_examples=600, derandomize=True, deadline=None)
def test_planned_changes_are_strawberrys_or_left_to_graphql_core(value: Any) -> None:
    """For any variable value: the plan builds what graphql-core and strawberry build, or
    refuses it; it refuses everything they refuse."""
    planned = variable_coercer(CHANGES_TYPE)
    assert planned is not None
    expected = reference(value)
    got = planned(value)
    if expected is None:
        assert got is REFUSED
    elif got is not REFUSED:
        assert ordered(got) == ordered(expected)
        assert [to_push_change_or_error(c) for c in got] == [
            to_push_change_or_error(c) for c in expected
        ]


def to_push_change_or_error(change: ChangeInput) -> Any:
    try:
        return to_push_change(change)
    except RecordValidationError as exc:
        return str(exc)


valid_changes = st.lists(
    st.fixed_dictionaries(
        {
            "clientMutationId": texts,
            "recordId": UUIDS,
            "op": st.sampled_from(["UPSERT", "DELETE"]),
            "counter": st.integers(1, 2**31 - 1),
            "patch": st.fixed_dictionaries(
                {
                    "customer": st.fixed_dictionaries(
                        {},
                        optional={
                            "businessName": st.one_of(st.none(), texts),
                            "phones": st.lists(
                                st.fixed_dictionaries(
                                    {"type": st.sampled_from(["MOBILE", "FAX"]), "number": texts}
                                ),
                                max_size=2,
                            ),
                            "notificationEmails": st.one_of(st.none(), st.lists(texts, max_size=2)),
                            "settings": st.fixed_dictionaries(
                                {}, optional={"taxFree": st.booleans(), "taxRate": st.floats(0, 9)}
                            ),
                            "customFields": json_values,
                        },
                    )
                }
            ),
        },
        optional={
            "baseVersion": st.one_of(
                st.none(), st.dictionaries(st.sampled_from(["server", "d1"]), st.integers(0, 9))
            ),
            "resolvesConflictId": st.one_of(st.none(), UUIDS),
        },
    ),
    max_size=3,
)


@given(valid_changes)
@settings(max_examples=200, derandomize=True, deadline=None)
def test_the_plan_takes_what_clients_send(value: list[dict[str, Any]]) -> None:
    """Valid changes as JSON clients send them are coerced by the plan, not left over."""
    planned = variable_coercer(CHANGES_TYPE)
    assert planned is not None
    got = planned(value)
    assert got is not REFUSED
    assert ordered(got) == ordered(reference(value))


def test_push_documents_are_planned() -> None:
    """The pushChanges variable of a push document is taken by the plan (the other
    variables, and a document with two operations and no name, by graphql-core)."""
    document = parse(PUSH)
    variables = {"d": "x", "changes": CHANGES}
    planned = planned_variables(SCHEMA._schema, document, variables, None)
    assert list(planned) == ["changes"]
    assert all(type(c) is ChangeInput for c in planned["changes"])
    twice = parse(PUSH + "\n" + PUSH.replace("mutation(", "mutation Other(", 1))
    assert planned_variables(SCHEMA._schema, twice, variables, None) == {}
    assert list(planned_variables(SCHEMA._schema, twice, variables, "Other")) == ["changes"]
