"""Custom field definitions, values on records, and badges."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import strawberry

from resolvers.context import Info
from schema.encoding import ObjectSpec, typed_builder
from schema.node import Node, to_global_id
from schema.scalars import JSON


@strawberry.enum(description="Record types that carry custom fields.")
class CustomFieldEntity(enum.Enum):
    """Where a custom field shows."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    CUSTOMER = strawberry.enum_value("CUSTOMER", description="Customers.")
    CONTACT = strawberry.enum_value("CONTACT", description="Contacts.")
    FACILITY = strawberry.enum_value("FACILITY", description="Facilities.")
    ASSET = strawberry.enum_value("ASSET", description="Assets.")


@strawberry.enum(description="The kind of value a custom field holds.")
class CustomFieldType(enum.Enum):
    """Value kinds."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    TEXT = strawberry.enum_value("TEXT", description="A string.")
    NUMBER = strawberry.enum_value("NUMBER", description="A finite number, integer or decimal.")
    DATE = strawberry.enum_value("DATE", description="A date as a string, YYYY-MM-DD.")
    CHECKBOX = strawberry.enum_value("CHECKBOX", description="true or false.")
    DROPDOWN = strawberry.enum_value(
        "DROPDOWN", description="One of the definition's `options`, by its `value`."
    )


@strawberry.type(description="One choice of a dropdown custom field.")
class DropdownOption:
    """A dropdown choice; with an icon it shows as a badge on the record."""

    value: str = strawberry.field(description="Stored value.")
    label: str = strawberry.field(description="Shown text.")
    badge_icon: str | None = strawberry.field(description="Icon name; set = show as a badge.")


@strawberry.type(description="A tenant-defined field on one record type.")
class CustomFieldDefinition(Node):
    """Definition of a custom field."""

    entity_type: CustomFieldEntity = strawberry.field(description="Record type it belongs to.")
    key: str = strawberry.field(description="Stable key the values are stored under.")
    label: str = strawberry.field(description="Shown name.")
    field_type: CustomFieldType = strawberry.field(description="Kind of value.")
    required: bool = strawberry.field(description="Every write of the record must set it.")
    options: list[DropdownOption] = strawberry.field(description="Choices (dropdowns only).")
    position: int = strawberry.field(description="Display order.")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CustomFieldDefinition:
        """From a ``custom_field_definitions`` row."""
        return cls(
            id=to_global_id("CustomFieldDefinition", row["id"]),
            entity_type=CustomFieldEntity(row["entity_type"]),
            key=row["key"],
            label=row["label"],
            field_type=CustomFieldType(row["field_type"]),
            required=row["required"],
            options=[
                DropdownOption(value=o["value"], label=o["label"], badge_icon=o.get("badgeIcon"))
                for o in row["options"]
            ],
            position=row["position"],
        )


@strawberry.type(description="A custom field's value on a record.")
class CustomFieldValue:
    """Key, label and value (text, number, date string, boolean or option value)."""

    key: str = strawberry.field(description="Definition key.")
    label: str = strawberry.field(description="Definition label.")
    field_type: CustomFieldType = strawberry.field(description="Kind of value.")
    value: JSON | None = strawberry.field(description="The value; null when unset.")


# A CustomFieldValue from (definition row, the record's stored values).
CUSTOM_FIELD_VALUE = ObjectSpec(
    name="CustomFieldValue",
    fields={
        "key": "v[0]['key']",
        "label": "v[0]['label']",
        "fieldType": "v[0]['field_type']",
        "value": "v[1].get(v[0]['key'])",
    },
)


@strawberry.type(description="A badge: a dropdown custom field value that has an icon.")
class Badge:
    """Shown next to the record's name."""

    field_key: str = strawberry.field(description="Definition key.")
    label: str = strawberry.field(description="The chosen option's label.")
    icon: str = strawberry.field(description="Icon name.")


# A Badge from one of ``chosen_badges``.
BADGE = ObjectSpec(
    name="Badge", fields={"fieldKey": "v['field_key']", "label": "v['label']", "icon": "v['icon']"}
)


@strawberry.input(description="Set one custom field; a null value clears it.")
class CustomFieldValueInput:
    """A custom field value to write."""

    key: str = strawberry.field(description="Definition key.")
    value: JSON | None = strawberry.field(description="New value, or null to clear.")


@strawberry.input(description="A dropdown choice.")
class DropdownOptionInput:
    """A dropdown choice to define."""

    value: str = strawberry.field(description="Stored value.")
    label: str = strawberry.field(description="Shown text.")
    badge_icon: str | None = strawberry.field(default=None, description="Icon; set = badge.")


@strawberry.input(description="A new custom field definition.")
class CreateCustomFieldInput:
    """Fields of a new definition."""

    entity_type: CustomFieldEntity = strawberry.field(
        description="Record type the field belongs to."
    )
    key: str = strawberry.field(description="Letters, digits, underscores; unique per type.")
    label: str = strawberry.field(description="Shown name.")
    field_type: CustomFieldType = strawberry.field(description="Kind of value.")
    required: bool = strawberry.field(
        default=False, description="Every write of a record of this type must set it."
    )
    options: list[DropdownOptionInput] = strawberry.field(
        default_factory=list, description="Dropdown choices."
    )
    position: int = strawberry.field(default=0, description="Display order.")


@strawberry.input(description="Changes to a custom field definition (type and key are fixed).")
class UpdateCustomFieldInput:
    """Omitted fields keep their values."""

    label: str | None = strawberry.field(default=strawberry.UNSET, description="Shown name.")
    required: bool | None = strawberry.field(
        default=strawberry.UNSET, description="Every write of a record of this type must set it."
    )
    options: list[DropdownOptionInput] | None = strawberry.field(
        default=strawberry.UNSET, description="Dropdown choices."
    )
    position: int | None = strawberry.field(default=strawberry.UNSET, description="Display order.")


def custom_fields_patch(values: list[CustomFieldValueInput]) -> dict[str, Any]:
    """{key: value} of the inputs; None values clear (the write path merges by key)."""
    return {v.key: v.value for v in values}


# What the record inputs' patches leave to :func:`set_custom_fields` (``patch_from``'s
# ``exclude``): a custom field value is client JSON of any depth, kept away from the walk
# that turns nested inputs into dicts, and taken as it is here (validation then refuses
# anything but a scalar).
CUSTOM_FIELDS = frozenset({"custom_fields"})


def set_custom_fields(patch: dict[str, Any], values: object) -> None:
    """Put an input's ``customFields`` into ``patch`` as the stored map merges them.

    Online inputs send a list of ``{key, value}``; sync patches send the map ``Change.data``
    holds (any JSON, as the scalar takes it). The values are merged by key into the
    record's map (a null value clears its key), so an empty list or map, like
    ``customFields: null``, merges nothing: the stored values stay as they are. To clear a
    field, send its key with a null value. A patch's JSON that is no map (a list of
    ``{key, value}`` objects, text) goes into the patch as sent, for the shape check to
    refuse with a field error.
    """
    if values is None or values is strawberry.UNSET or values in ([], {}):
        patch.pop("custom_fields", None)
    elif isinstance(values, list) and all(isinstance(v, CustomFieldValueInput) for v in values):
        patch["custom_fields"] = custom_fields_patch(values)
    else:
        patch["custom_fields"] = values


async def values_of(info: Info, entity: str, stored: Mapping[str, Any]) -> list[CustomFieldValue]:
    """The record's custom field values, in definition order, including unset ones."""
    definitions = await info.context.loaders.field_definitions_by_entity.load(entity)
    build = typed_builder(CUSTOM_FIELD_VALUE, CustomFieldValue)
    return [build((d, stored)) for d in definitions]


def chosen_badges(
    definitions: Sequence[Mapping[str, Any]], stored: Mapping[str, Any]
) -> list[dict[str, str]]:
    """``{field_key, label, icon}`` of each dropdown whose chosen option has an icon, in
    definition order (the typed field below and the encoded reads share it)."""
    found = []
    for d in definitions:
        if d["field_type"] != "DROPDOWN":
            continue
        for option in d["options"]:
            if option["value"] == stored.get(d["key"]) and option.get("badgeIcon"):
                found.append(
                    {"field_key": d["key"], "label": option["label"], "icon": option["badgeIcon"]}
                )
    return found


async def badges_of(info: Info, entity: str, stored: Mapping[str, Any]) -> list[Badge]:
    """Badges: chosen dropdown options that have an icon."""
    definitions = await info.context.loaders.field_definitions_by_entity.load(entity)
    return list(map(typed_builder(BADGE, Badge), chosen_badges(definitions, stored)))
