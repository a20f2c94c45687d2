"""The Asset type (a door or piece of equipment at a facility), its inputs and results."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Annotated, Any
from uuid import UUID

import strawberry

from resolvers.context import Info
from schema.custom_fields import CustomFieldValue, CustomFieldValueInput, values_of
from schema.customers import Customer
from schema.encoding import ObjectSpec, Serialized, typed_builder
from schema.errors import EditConflict, Forbidden, NotFound, ValidationError
from schema.facilities import Facility
from schema.node import Node
from schema.records import RECORD_NAMES, RECORD_PRIVATE, SyncedRecord, record_fields


@strawberry.type(description="A door or piece of equipment at a facility.")
class Asset(Node, SyncedRecord):
    """An asset."""

    kind: str = strawberry.field(description="What it is, e.g. 'Fire door', 'Rolling shutter'.")
    manufacturer: str | None = strawberry.field(description="Manufacturer.")
    model: str | None = strawberry.field(description="Model.")
    serial_number: str | None = strawberry.field(description="Serial number.")
    install_date: date | None = strawberry.field(description="When it was installed.")
    location: str | None = strawberry.field(description="Where on the site, e.g. 'Dock 3'.")
    notes: str | None = strawberry.field(description="Free notes.")
    uuid: strawberry.Private[UUID]
    customer_uuid: strawberry.Private[UUID]
    facility_uuid: strawberry.Private[UUID]
    stored_custom_fields: strawberry.Private[dict[str, Any]]

    @strawberry.field(description="Custom field values, in definition order.")
    async def custom_fields(self, info: Info) -> list[CustomFieldValue]:
        """Values paired with their definitions."""
        return await values_of(info, "ASSET", self.stored_custom_fields)

    @strawberry.field(description="The site the asset is at.")
    async def facility(self, info: Info) -> Facility | None:
        """Null only if the facility was deleted meanwhile."""
        row = await info.context.loaders.facility_by_id.load(self.facility_uuid)
        return Facility.from_row(row) if row else None

    @strawberry.field(description="The customer that owns the asset.")
    async def customer(self, info: Info) -> Customer | None:
        """Null only if the customer was deleted meanwhile."""
        row = await info.context.loaders.customer_by_id.load(self.customer_uuid)
        return Customer.from_row(row) if row else None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Asset:
        """From an ``assets`` row (read as ``ASSET_ROW`` says)."""
        return typed_builder(ASSET_ROW, cls)(row)


# An Asset from its row (custom fields: see ``schema.customers.CUSTOMER_ROW``).
ASSET_ROW = ObjectSpec(
    name="Asset",
    fields={
        **record_fields("Asset"),
        "kind": "v['kind']",
        "manufacturer": "v['manufacturer']",
        "model": "v['model']",
        "serialNumber": "v['serial_number']",
        "installDate": Serialized(
            "v['install_date']", "(None if {0} is None else {0}.isoformat())"
        ),
        "location": "v['location']",
        "notes": "v['notes']",
    },
    names=RECORD_NAMES,
    private={
        **RECORD_PRIVATE,
        "customer_uuid": "v['customer_id']",
        "facility_uuid": "v['facility_id']",
    },
)


@strawberry.input(description="Fields of an asset; on update omitted fields keep their values.")
class AssetFields:
    """Asset fields."""

    kind: str | None = strawberry.field(
        default=strawberry.UNSET, description="What it is, e.g. 'Fire door'."
    )
    manufacturer: str | None = strawberry.field(
        default=strawberry.UNSET, description="Manufacturer."
    )
    model: str | None = strawberry.field(default=strawberry.UNSET, description="Model.")
    serial_number: str | None = strawberry.field(
        default=strawberry.UNSET, description="Serial number."
    )
    install_date: date | None = strawberry.field(
        default=strawberry.UNSET, description="Installation date."
    )
    location: str | None = strawberry.field(
        default=strawberry.UNSET, description="Where on the site."
    )
    notes: str | None = strawberry.field(default=strawberry.UNSET, description="Free notes.")
    custom_fields: list[CustomFieldValueInput] | None = strawberry.field(
        default=strawberry.UNSET,
        description="Custom field values to set, merged by key: a null value clears its key;"
        " an empty list or null changes nothing.",
    )


@strawberry.input(description="A new asset at a facility.")
class CreateAssetInput(AssetFields):
    """Asset plus its facility."""

    facility_id: strawberry.ID = strawberry.field(description="Global id of the facility.")


AssetResult = Annotated[
    Asset | ValidationError | NotFound | Forbidden | EditConflict,
    strawberry.union("AssetResult", description="An asset, or why the write was refused."),
]
