"""Asset queries and mutations."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import strawberry

from db.entities import ASSET
from resolvers.context import Info
from resolvers.lists import child_connection, parent_filter
from resolvers.writes import delete_record, link, save_record
from schema.assets import Asset, AssetFields, AssetResult, CreateAssetInput
from schema.custom_fields import CUSTOM_FIELDS, set_custom_fields
from schema.customers import DeletedRecord, DeleteResult
from schema.errors import UserError
from schema.pagination import After, Connection, OfCustomer, first_doc
from schema.records import BASE_VERSION_DOC, patch_from
from schema.scalars import VersionVector


def asset_patch(data: AssetFields) -> dict[str, Any]:
    """Table columns from an asset input."""
    patch = patch_from(data, exclude=CUSTOM_FIELDS)
    patch.pop("facility_id", None)
    set_custom_fields(patch, data.custom_fields)
    return patch


@strawberry.type
class AssetQueries:
    """Asset reads."""

    @strawberry.field(description="Assets, optionally of one customer or facility, by kind.")
    async def assets(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description=first_doc(20))] = 20,
        after: After = None,
        customer_id: OfCustomer = None,
        facility_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="Only those of this facility (global `id` or uuid); omitted: every"
                " facility."
            ),
        ] = None,
        search: Annotated[
            str | None,
            strawberry.argument(
                description="Only those whose kind, manufacturer, model, serial number or location"
                " contains this text, any case."
            ),
        ] = None,
    ) -> Connection[Asset]:
        """Keyset-paginated asset list."""
        equals = parent_filter(
            customer_id=(customer_id, "Customer"), facility_id=(facility_id, "Facility")
        )
        return await child_connection(
            info, ASSET, Asset.from_row, equals=equals, search=search, first=first, after=after
        )


@strawberry.type
class AssetMutations:
    """Asset writes."""

    @strawberry.mutation(
        description="Add an asset (door, equipment) to a facility.", graphql_type=AssetResult
    )
    async def create_asset(
        self,
        info: Info,
        input: Annotated[
            CreateAssetInput,
            strawberry.argument(description="The new asset's fields and its facility."),
        ],
    ) -> Asset | UserError:
        """New asset."""
        facility = link(input.facility_id, "Facility")
        if not isinstance(facility, UUID):
            return facility
        return await save_record(
            info,
            ASSET,
            Asset.from_row,
            global_id=None,
            patch=asset_patch(input),
            links={"facility_id": facility},
        )

    @strawberry.mutation(description="Change an asset's fields.", graphql_type=AssetResult)
    async def update_asset(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The asset's global `id` or its uuid (`recordId`)."),
        ],
        input: Annotated[
            AssetFields,
            strawberry.argument(
                description="The fields to change; omitted fields keep their values."
            ),
        ],
        base_version: Annotated[
            VersionVector | None,
            strawberry.argument(description=BASE_VERSION_DOC),
        ] = None,
    ) -> Asset | UserError:
        """Partial update."""
        return await save_record(
            info,
            ASSET,
            Asset.from_row,
            global_id=id,
            patch=asset_patch(input),
            base_version=base_version,
        )

    @strawberry.mutation(
        description="Delete an asset (devices receive a tombstone).", graphql_type=DeleteResult
    )
    async def delete_asset(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The asset's global `id` or its uuid (`recordId`)."),
        ],
    ) -> DeletedRecord | UserError:
        """Delete."""
        return await delete_record(info, ASSET, id)
