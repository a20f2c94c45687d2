"""pushChanges' ChangeInput conversion (schema/input_plans.py) builds what Strawberry builds."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import coerce_input_value
from strawberry.types.arguments import InputContext, convert_argument

from resolvers.sync import to_push_change
from schema.input_plans import planned_from_input
from schema.sync import ChangeInput
from server.schema import build_schema

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
