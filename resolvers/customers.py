"""Customer queries and mutations."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import strawberry
from sqlalchemy.ext.asyncio import AsyncConnection

from db.entities import CUSTOMER
from db.queries import customers as queries
from db.queries.records import sees_customer
from resolvers.context import Info, PublicError
from resolvers.lists import counted_connection, page_request
from resolvers.writes import decode_id, delete_record, save_record
from schema.custom_fields import CUSTOM_FIELDS, set_custom_fields
from schema.customers import (
    CreateCustomerInput,
    Customer,
    CustomerFilter,
    CustomerOrder,
    CustomerOrderField,
    CustomerResult,
    DeletedRecord,
    DeleteResult,
    OrderDirection,
    UpdateCustomerInput,
)
from schema.errors import UserError
from schema.node import InvalidIdError
from schema.pagination import After, Connection, first_doc
from schema.records import BASE_VERSION_DOC, patch_from
from schema.scalars import VersionVector

SORTS = {
    CustomerOrderField.NAME: queries.CustomerSort.NAME,
    CustomerOrderField.CREATED_AT: queries.CustomerSort.CREATED_AT,
    CustomerOrderField.UPDATED_AT: queries.CustomerSort.UPDATED_AT,
}


def customer_patch(data: CreateCustomerInput) -> dict[str, Any]:
    """Table columns from a create or update input."""
    patch = patch_from(data, exclude=CUSTOM_FIELDS)
    set_custom_fields(patch, data.custom_fields)
    for name in ("phones", "addresses", "notification_emails", "invoice_cc_emails"):
        if name in patch and patch[name] is None:
            patch[name] = []
    if "settings" in patch and patch["settings"] is None:
        del patch["settings"]
    return patch


def list_request(
    first: int,
    after: tuple[Any, UUID] | None,
    flt: CustomerFilter | None,
    order: CustomerOrder | None,
) -> queries.ListRequest:
    """What ``customers(first, after, filter, orderBy)`` asks of the list, with the input
    types' own defaults (both read paths build it here)."""
    flt = flt or CustomerFilter()
    order = order or CustomerOrder()
    return queries.ListRequest(
        first=first,
        after=after,
        descending=order.direction is OrderDirection.DESC,
        sort=SORTS[order.field],
        archived=flt.archived,
        email=flt.email,
        search=flt.search,
    )


@strawberry.type
class CustomerQueries:
    """Customer reads."""

    @strawberry.field(description="Customers, filtered and ordered, a page at a time.")
    async def customers(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description=first_doc(20))] = 20,
        after: After = None,
        filter: Annotated[
            CustomerFilter | None,
            strawberry.argument(
                description="Which customers; omitted: the active (not archived) ones."
            ),
        ] = None,
        order_by: Annotated[
            CustomerOrder | None,
            strawberry.argument(description="Sort key and direction; omitted: by name, A to Z."),
        ] = None,
    ) -> Connection[Customer]:
        """Keyset-paginated customer list."""
        user = await info.context.user()
        checked = page_request(info, first, after)
        request = list_request(checked.first, checked.after, filter, order_by)
        if not request.cursor_fits():
            raise PublicError(
                "`after` is a cursor of another ordering of this list: page this ordering"
                " from its own cursors (or from the start)",
                "BAD_USER_INPUT",
            )
        async with info.context.read() as conn:
            page = await queries.page(conn, request, org_id=user.org_id, user_id=user.id)
        sort = request.sort.value

        async def count(conn: AsyncConnection) -> int:
            return await queries.count(conn, request, org_id=user.org_id, user_id=user.id)

        return counted_connection(
            info, checked, page, count, Customer.from_row, lambda row: (row[sort], row["id"])
        )

    @strawberry.field(
        description="One customer by global id or by its uuid (`recordId`); null if unknown."
    )
    async def customer(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="The customer's global `id` or its uuid (`recordId`); a malformed"
                " id gives null."
            ),
        ],
    ) -> Customer | None:
        """Customer by id."""
        user = await info.context.user()
        try:
            customer_id = decode_id(id, "Customer")
        except InvalidIdError:
            return None
        if not sees_customer(user.role.value, user.customer_id, customer_id):
            return None
        row = await info.context.loaders.customer_by_id.load(customer_id)
        return None if row is None else Customer.from_row(row)


@strawberry.type
class CustomerMutations:
    """Customer writes; each returns the customer or a typed error, never half-done."""

    @strawberry.mutation(description="Create a customer.", graphql_type=CustomerResult)
    async def create_customer(
        self,
        info: Info,
        input: Annotated[
            CreateCustomerInput, strawberry.argument(description="The new customer's fields.")
        ],
    ) -> Customer | UserError:
        """New customer."""
        return await save_record(
            info, CUSTOMER, Customer.from_row, global_id=None, patch=customer_patch(input)
        )

    @strawberry.mutation(description="Change a customer's fields.", graphql_type=CustomerResult)
    async def update_customer(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The customer's global `id` or its uuid (`recordId`)."),
        ],
        input: Annotated[
            UpdateCustomerInput,
            strawberry.argument(
                description="The fields to change; omitted fields keep their values."
            ),
        ],
        base_version: Annotated[
            VersionVector | None,
            strawberry.argument(description=BASE_VERSION_DOC),
        ] = None,
    ) -> Customer | UserError:
        """Partial update."""
        return await save_record(
            info,
            CUSTOMER,
            Customer.from_row,
            global_id=id,
            patch=customer_patch(input),
            base_version=base_version,
        )

    @strawberry.mutation(
        description="Archive: hide the customer and stop syncing it to devices.",
        graphql_type=CustomerResult,
    )
    async def archive_customer(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The customer's global `id` or its uuid (`recordId`)."),
        ],
    ) -> Customer | UserError:
        """Archive."""
        return await save_record(
            info, CUSTOMER, Customer.from_row, global_id=id, patch={"archived": True}
        )

    @strawberry.mutation(
        description="Re-enable an archived customer; it syncs again.", graphql_type=CustomerResult
    )
    async def reenable_customer(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The customer's global `id` or its uuid (`recordId`)."),
        ],
    ) -> Customer | UserError:
        """Re-enable."""
        return await save_record(
            info, CUSTOMER, Customer.from_row, global_id=id, patch={"archived": False}
        )

    @strawberry.mutation(
        description="Delete a customer with nothing attached; otherwise archive it instead.",
        graphql_type=DeleteResult,
    )
    async def delete_customer(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The customer's global `id` or its uuid (`recordId`)."),
        ],
    ) -> DeletedRecord | UserError:
        """Delete (tombstone)."""
        return await delete_record(info, CUSTOMER, id)
