"""Custom field definitions: list for everyone, manage for admins."""

from __future__ import annotations

from typing import Annotated, Any

import strawberry

from db.commands import custom_fields as commands
from resolvers.context import CurrentUser, Info
from resolvers.writes import bad_id, decode_id, run_write
from schema.custom_fields import (
    CreateCustomFieldInput,
    CustomFieldDefinition,
    CustomFieldEntity,
    UpdateCustomFieldInput,
)
from schema.errors import Duplicate, Forbidden, NotFound, UserError, ValidationError
from schema.node import InvalidIdError
from schema.records import plain

CustomFieldResult = Annotated[
    CustomFieldDefinition | ValidationError | NotFound | Duplicate | Forbidden,
    strawberry.union("CustomFieldResult", description="A definition, or why it was refused."),
]


ADMINS_MANAGE_FIELDS = "only admins may manage custom fields"


def _admin(user: CurrentUser) -> bool:
    return user.is_admin


@strawberry.type
class CustomFieldQueries:
    """Custom field reads."""

    @strawberry.field(description="Custom field definitions of one record type, in order.")
    async def custom_field_definitions(
        self,
        info: Info,
        entity_type: Annotated[
            CustomFieldEntity,
            strawberry.argument(description="The record type whose definitions to list."),
        ],
    ) -> list[CustomFieldDefinition]:
        """Definitions."""
        await info.context.user()
        rows = await info.context.loaders.field_definitions_by_entity.load(entity_type.value)
        return [CustomFieldDefinition.from_row(r) for r in rows]


@strawberry.type
class CustomFieldMutations:
    """Custom field management (admins only)."""

    @strawberry.mutation(
        description="Define a custom field (admins only).", graphql_type=CustomFieldResult
    )
    async def create_custom_field(
        self,
        info: Info,
        input: Annotated[
            CreateCustomFieldInput, strawberry.argument(description="The new definition.")
        ],
    ) -> CustomFieldDefinition | UserError:
        """New definition."""
        values: dict[str, Any] = {
            "entity_type": input.entity_type.value,
            "key": input.key,
            "label": input.label,
            "field_type": input.field_type.value,
            "required": input.required,
            "options": plain(input.options),
            "position": input.position,
        }
        result = await run_write(
            info,
            lambda conn, user: commands.create_definition(conn, user.org_id, values),
            allowed=_admin,
            refusal=ADMINS_MANAGE_FIELDS,
        )
        return CustomFieldDefinition.from_row(result) if isinstance(result, dict) else result

    @strawberry.mutation(
        description="Change a custom field (admins only). Making it required makes later writes"
        " without it fail.",
        graphql_type=CustomFieldResult,
    )
    async def update_custom_field(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID, strawberry.argument(description="The definition's global `id`.")
        ],
        input: Annotated[
            UpdateCustomFieldInput,
            strawberry.argument(
                description="The fields to change; omitted fields keep their values."
            ),
        ],
    ) -> CustomFieldDefinition | UserError:
        """Partial update."""
        try:
            def_id = decode_id(id, "CustomFieldDefinition")
        except InvalidIdError as exc:
            return bad_id(id, exc)
        values = {k: plain(v) for k, v in vars(input).items() if v is not strawberry.UNSET}
        values = {k: v for k, v in values.items() if v is not None}
        result = await run_write(
            info,
            lambda conn, user: commands.update_definition(conn, user.org_id, def_id, values),
            client_id=id,
            allowed=_admin,
            refusal=ADMINS_MANAGE_FIELDS,
        )
        return CustomFieldDefinition.from_row(result) if isinstance(result, dict) else result

    @strawberry.mutation(
        description="Remove a custom field definition (admins only; stored values are ignored).",
        graphql_type=CustomFieldResult,
    )
    async def delete_custom_field(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID, strawberry.argument(description="The definition's global `id`.")
        ],
    ) -> CustomFieldDefinition | UserError:
        """Delete."""
        try:
            def_id = decode_id(id, "CustomFieldDefinition")
        except InvalidIdError as exc:
            return bad_id(id, exc)
        result = await run_write(
            info,
            lambda conn, user: commands.delete_definition(conn, user.org_id, def_id),
            client_id=id,
            allowed=_admin,
            refusal=ADMINS_MANAGE_FIELDS,
        )
        return CustomFieldDefinition.from_row(result) if isinstance(result, dict) else result
