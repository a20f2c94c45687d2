"""The Facility type (a building or site of a customer), its inputs and results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import strawberry

from resolvers.context import Info
from schema.custom_fields import CustomFieldValue, CustomFieldValueInput, values_of
from schema.customers import ADDRESS_LINES, Customer
from schema.encoding import Nested, ObjectSpec, typed_builder
from schema.errors import EditConflict, Forbidden, NotFound, ValidationError
from schema.node import Node
from schema.pagination import After, Connection, first_doc
from schema.records import RECORD_NAMES, RECORD_PRIVATE, SyncedRecord, record_fields

if TYPE_CHECKING:
    from schema.assets import Asset


@strawberry.type(description="Street address of a site.")
class SiteAddress:
    """Where a facility is."""

    line1: str | None = strawberry.field(description="Street and number.")
    line2: str | None = strawberry.field(description="Suite, floor, etc.")
    city: str | None = strawberry.field(description="City.")
    region: str | None = strawberry.field(description="State or province.")
    postal_code: str | None = strawberry.field(description="Postal code.")
    country: str | None = strawberry.field(description="Country.")


# A SiteAddress from its stored JSON object.
SITE_ADDRESS = ObjectSpec(name="SiteAddress", fields=ADDRESS_LINES)


@strawberry.input(description="Street address of a site.")
class SiteAddressInput:
    """Address to store."""

    line1: str | None = strawberry.field(default=None, description="Street and number.")
    line2: str | None = strawberry.field(default=None, description="Suite, floor, etc.")
    city: str | None = strawberry.field(default=None, description="City.")
    region: str | None = strawberry.field(default=None, description="State or province.")
    postal_code: str | None = strawberry.field(default=None, description="Postal code.")
    country: str | None = strawberry.field(default=None, description="Country.")


@strawberry.type(description="A building or site of a customer, where assets are.")
class Facility(Node, SyncedRecord):
    """A facility."""

    name: str = strawberry.field(description="Name of the site.")
    address: SiteAddress = strawberry.field(description="Where it is.")
    notes: str | None = strawberry.field(description="Free notes (access, parking...).")
    uuid: strawberry.Private[UUID]
    customer_uuid: strawberry.Private[UUID]
    stored_custom_fields: strawberry.Private[dict[str, Any]]

    @strawberry.field(description="Custom field values, in definition order.")
    async def custom_fields(self, info: Info) -> list[CustomFieldValue]:
        """Values paired with their definitions."""
        return await values_of(info, "FACILITY", self.stored_custom_fields)

    @strawberry.field(description="The customer that owns this site.")
    async def customer(self, info: Info) -> Customer | None:
        """Null only if the customer was deleted meanwhile."""
        row = await info.context.loaders.customer_by_id.load(self.customer_uuid)
        return Customer.from_row(row) if row else None

    @strawberry.field(description="Doors and equipment at this site.")
    async def assets(self, info: Info) -> list[Annotated[Asset, strawberry.lazy("schema.assets")]]:
        """Live assets, by kind."""
        from schema.assets import Asset

        rows = await info.context.loaders.assets_by_facility.load(self.uuid)
        return [Asset.from_row(r) for r in rows]

    @strawberry.field(
        description="Doors and equipment at this site, a page at a time by kind (a Relay"
        " connection; `assets` is the whole list)."
    )
    async def assets_connection(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description=first_doc(20, "assets"))] = 20,
        after: After = None,
    ) -> Connection[Annotated[Asset, strawberry.lazy("schema.assets")]]:
        """Keyset-paginated live assets, every facility's of a list in one statement."""
        from resolvers.lists import children_connection
        from schema.assets import Asset

        loaders = info.context.loaders.asset_pages_by_facility
        return await children_connection(
            info, loaders, self.uuid, Asset.from_row, first=first, after=after
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Facility:
        """From a ``facilities`` row (read as ``FACILITY_ROW`` says)."""
        return typed_builder(FACILITY_ROW, cls)(row)


# A Facility from its row (custom fields and assets: see ``schema.customers.CUSTOMER_ROW``).
FACILITY_ROW = ObjectSpec(
    name="Facility",
    fields={
        **record_fields("Facility"),
        "name": "v['name']",
        "address": Nested("v['address']", SITE_ADDRESS, many=False),
        "notes": "v['notes']",
    },
    names=RECORD_NAMES,
    private={**RECORD_PRIVATE, "customer_uuid": "v['customer_id']"},
)


@strawberry.input(description="Fields of a facility; on update omitted fields keep their values.")
class FacilityFields:
    """Facility fields."""

    name: str | None = strawberry.field(default=strawberry.UNSET, description="Name.")
    address: SiteAddressInput | None = strawberry.field(
        default=strawberry.UNSET, description="Street address of the site."
    )
    notes: str | None = strawberry.field(default=strawberry.UNSET, description="Free notes.")
    custom_fields: list[CustomFieldValueInput] | None = strawberry.field(
        default=strawberry.UNSET,
        description="Custom field values to set, merged by key: a null value clears its key;"
        " an empty list or null changes nothing.",
    )


@strawberry.input(description="A new facility of a customer.")
class CreateFacilityInput(FacilityFields):
    """Facility plus its customer."""

    customer_id: strawberry.ID = strawberry.field(description="Global id of the customer.")


FacilityResult = Annotated[
    Facility | ValidationError | NotFound | Forbidden | EditConflict,
    strawberry.union("FacilityResult", description="A facility, or why the write was refused."),
]
