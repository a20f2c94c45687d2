"""Facility queries and mutations."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import strawberry

from db.entities import FACILITY
from resolvers.context import Info
from resolvers.lists import child_connection, parent_filter
from resolvers.writes import delete_record, link, save_record
from schema.custom_fields import CUSTOM_FIELDS, set_custom_fields
from schema.customers import DeletedRecord, DeleteResult
from schema.errors import UserError
from schema.facilities import CreateFacilityInput, Facility, FacilityFields, FacilityResult
from schema.pagination import After, Connection, OfCustomer, first_doc
from schema.records import BASE_VERSION_DOC, patch_from
from schema.scalars import VersionVector


def facility_patch(data: FacilityFields) -> dict[str, Any]:
    """Table columns from a facility input."""
    patch = patch_from(data, exclude=CUSTOM_FIELDS)
    patch.pop("customer_id", None)
    set_custom_fields(patch, data.custom_fields)
    if "address" in patch and patch["address"] is None:
        patch["address"] = {}
    return patch


@strawberry.type
class FacilityQueries:
    """Facility reads."""

    @strawberry.field(description="Facilities, optionally of one customer, by name.")
    async def facilities(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description=first_doc(20))] = 20,
        after: After = None,
        customer_id: OfCustomer = None,
        search: Annotated[
            str | None,
            strawberry.argument(description="Only those whose name contains this text, any case."),
        ] = None,
    ) -> Connection[Facility]:
        """Keyset-paginated facility list."""
        equals = parent_filter(customer_id=(customer_id, "Customer"))
        return await child_connection(
            info,
            FACILITY,
            Facility.from_row,
            equals=equals,
            search=search,
            first=first,
            after=after,
        )


@strawberry.type
class FacilityMutations:
    """Facility writes."""

    @strawberry.mutation(
        description="Add a facility (building or site) to a customer.", graphql_type=FacilityResult
    )
    async def create_facility(
        self,
        info: Info,
        input: Annotated[
            CreateFacilityInput,
            strawberry.argument(description="The new facility's fields and its customer."),
        ],
    ) -> Facility | UserError:
        """New facility."""
        customer = link(input.customer_id, "Customer")
        if not isinstance(customer, UUID):
            return customer
        return await save_record(
            info,
            FACILITY,
            Facility.from_row,
            global_id=None,
            patch=facility_patch(input),
            links={"customer_id": customer},
        )

    @strawberry.mutation(description="Change a facility's fields.", graphql_type=FacilityResult)
    async def update_facility(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The facility's global `id` or its uuid (`recordId`)."),
        ],
        input: Annotated[
            FacilityFields,
            strawberry.argument(
                description="The fields to change; omitted fields keep their values."
            ),
        ],
        base_version: Annotated[
            VersionVector | None,
            strawberry.argument(description=BASE_VERSION_DOC),
        ] = None,
    ) -> Facility | UserError:
        """Partial update."""
        return await save_record(
            info,
            FACILITY,
            Facility.from_row,
            global_id=id,
            patch=facility_patch(input),
            base_version=base_version,
        )

    @strawberry.mutation(
        description="Delete a facility with no assets left.", graphql_type=DeleteResult
    )
    async def delete_facility(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The facility's global `id` or its uuid (`recordId`)."),
        ],
    ) -> DeletedRecord | UserError:
        """Delete."""
        return await delete_record(info, FACILITY, id)
