"""Relay's ``node(id:)``: any object by global id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import strawberry

from resolvers.context import Info, Role
from schema.assets import Asset
from schema.contacts import Contact
from schema.credentials import Credential
from schema.customers import Customer
from schema.facilities import Facility
from schema.node import InvalidIdError, Node, from_global_id


@strawberry.type
class NodeQueries:
    """Global object lookup."""

    @strawberry.field(description="Any object by its global id; null if unknown or not visible.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        """Fetch by global id."""
        user = await info.context.user()
        try:
            type_name, record_id = from_global_id(id)
        except InvalidIdError:
            return None
        loaders = info.context.loaders
        kinds: dict[str, tuple[Any, Callable[[dict[str, Any]], Node]]] = {
            "Customer": (loaders.customer_by_id, Customer.from_row),
            "Contact": (loaders.contact_by_id, Contact.from_row),
            "Facility": (loaders.facility_by_id, Facility.from_row),
            "Asset": (loaders.asset_by_id, Asset.from_row),
            # Loaded only if visible to the caller (portal users: their public ones).
            "Credential": (loaders.credential_by_id, Credential.from_row),
        }
        if type_name not in kinds:
            return None
        loader, from_row = kinds[type_name]
        row = await loader.load(record_id)
        if row is None:
            return None
        if user.role is Role.PORTAL and row["customer_id"] != user.customer_id:
            return None
        return from_row(row)
