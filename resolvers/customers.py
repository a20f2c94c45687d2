"""Customer queries and mutations."""

from __future__ import annotations

from typing import Annotated, Any, cast
from uuid import UUID

import strawberry

from db.entities import CUSTOMER
from db.queries import customers as queries
from resolvers import record_json
from resolvers.context import Info, Role
from resolvers.encoded import cached_shape, encode, nested_shape, selected_shape
from resolvers.lists import page_connection, page_request
from resolvers.writes import decode_id, delete_record, save_record
from schema.custom_fields import set_custom_fields, without_custom_fields
from schema.customers import (
    CreateCustomerInput,
    Customer,
    CustomerFilter,
    CustomerOrder,
    CustomerOrderField,
    CustomerResult,
    DeleteResult,
    OrderDirection,
    UpdateCustomerInput,
)
from schema.node import InvalidIdError
from schema.pagination import Connection
from schema.preencoded import PreEncoded
from schema.records import BASE_VERSION_DOC, patch_from
from schema.scalars import VersionVector

SORTS = {
    CustomerOrderField.NAME: queries.CustomerSort.NAME,
    CustomerOrderField.CREATED_AT: queries.CustomerSort.CREATED_AT,
    CustomerOrderField.UPDATED_AT: queries.CustomerSort.UPDATED_AT,
}


def customer_patch(data: CreateCustomerInput) -> dict[str, Any]:
    """Table columns from a create or update input."""
    patch = patch_from(without_custom_fields(data))
    set_custom_fields(patch, data.custom_fields)
    for name in ("phones", "addresses", "notification_emails", "invoice_cc_emails"):
        if name in patch and patch[name] is None:
            patch[name] = []
    if "settings" in patch and patch["settings"] is None:
        del patch["settings"]
    return patch


@strawberry.type
class CustomerQueries:
    """Customer reads."""

    @strawberry.field(description="Customers, filtered and ordered, a page at a time.")
    async def customers(
        self,
        info: Info,
        first: int = 20,
        after: str | None = None,
        filter: CustomerFilter | None = None,
        order_by: CustomerOrder | None = None,
    ) -> Connection[Customer]:
        """Keyset-paginated customer list."""
        user = await info.context.user()
        flt = filter or CustomerFilter()
        order = order_by or CustomerOrder()
        sort = SORTS[order.field]
        query_filter = queries.CustomerFilter(
            search=flt.search,
            archived=flt.archived,
            email=flt.email,
            only_id=user.customer_id if user.role is Role.PORTAL else None,
        )
        request = page_request(
            info, first, after, descending=order.direction is OrderDirection.DESC
        )
        async with info.context.read() as conn:
            page, query = await queries.customer_page(
                conn, user.org_id, query_filter, sort, request
            )

        def key(row: dict[str, Any]) -> tuple[Any, UUID]:
            return row[sort.value], row["id"]

        edge = record_json.CUSTOMER_EDGE
        shape = cached_shape(
            info,
            "customers.edges",
            lambda: nested_shape(edge, info.selected_fields, "CustomerConnection", "edges"),
        )
        if shape is None:
            return page_connection(info, request, page, query, Customer.from_row, key)
        # The whole page in one pass (resolvers/record_json.py): no per-field completion.
        for _, name, node_shape in shape:
            if name == "node" and node_shape is not None:
                await record_json.attach(info.context, record_json.CUSTOMER, node_shape, page.rows)
        connection = page_connection(info, request, page, query, lambda row: row, key)
        edges = encode(edge, shape, connection.edges)
        connection.edges = cast("list[Any]", PreEncoded(edges))
        return cast("Connection[Customer]", connection)

    @strawberry.field(
        description="One customer by global id or by its uuid (`recordId`); null if unknown."
    )
    async def customer(self, info: Info, id: strawberry.ID) -> Customer | None:
        """Customer by id."""
        user = await info.context.user()
        try:
            customer_id = decode_id(id, "Customer")
        except InvalidIdError:
            return None
        if user.role is Role.PORTAL and customer_id != user.customer_id:
            return None
        row = await info.context.loaders.customer_by_id.load(customer_id)
        if row is None:
            return None
        spec = record_json.CUSTOMER
        shape = cached_shape(info, "customer", lambda: selected_shape(spec, info.selected_fields))
        if shape is None:
            return Customer.from_row(row)
        await record_json.attach(info.context, spec, shape, [row])
        return cast("Customer", PreEncoded(record_json.encode_one(spec, shape, row)))


@strawberry.type
class CustomerMutations:
    """Customer writes; each returns the customer or a typed error, never half-done."""

    @strawberry.mutation(description="Create a customer.")
    async def create_customer(self, info: Info, input: CreateCustomerInput) -> CustomerResult:
        """New customer."""
        return await save_record(  # type: ignore[no-any-return]
            info, CUSTOMER, Customer.from_row, global_id=None, patch=customer_patch(input)
        )

    @strawberry.mutation(description="Change a customer's fields.")
    async def update_customer(
        self,
        info: Info,
        id: strawberry.ID,
        input: UpdateCustomerInput,
        base_version: Annotated[
            VersionVector | None,
            strawberry.argument(description=BASE_VERSION_DOC),
        ] = None,
    ) -> CustomerResult:
        """Partial update."""
        return await save_record(  # type: ignore[no-any-return]
            info,
            CUSTOMER,
            Customer.from_row,
            global_id=id,
            patch=customer_patch(input),
            base_version=base_version,
        )

    @strawberry.mutation(description="Archive: hide the customer and stop syncing it to devices.")
    async def archive_customer(self, info: Info, id: strawberry.ID) -> CustomerResult:
        """Archive."""
        return await save_record(  # type: ignore[no-any-return]
            info, CUSTOMER, Customer.from_row, global_id=id, patch={"archived": True}
        )

    @strawberry.mutation(description="Re-enable an archived customer; it syncs again.")
    async def reenable_customer(self, info: Info, id: strawberry.ID) -> CustomerResult:
        """Re-enable."""
        return await save_record(  # type: ignore[no-any-return]
            info, CUSTOMER, Customer.from_row, global_id=id, patch={"archived": False}
        )

    @strawberry.mutation(
        description="Delete a customer with nothing attached; otherwise archive it instead."
    )
    async def delete_customer(self, info: Info, id: strawberry.ID) -> DeleteResult:
        """Delete (tombstone)."""
        return await delete_record(info, CUSTOMER, id)  # type: ignore[no-any-return]
