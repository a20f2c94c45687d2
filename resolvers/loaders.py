"""Per-request DataLoaders (``<Entity>By<Key>Loader``): one SQL statement per batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from strawberry.dataloader import DataLoader

from db.entities import ASSET, CONTACT, CUSTOMER, FACILITY, EntitySpec, EntityType
from db.queries import credentials, custom_fields, records
from db.queries.pages import rows_in_id_order

if TYPE_CHECKING:
    from resolvers.context import Context

Row = dict[str, Any]


class Loaders:
    """The loaders of one request, sharing its read transaction."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.customer_by_id = self._by_id(CUSTOMER)
        self.contact_by_id = self._by_id(CONTACT)
        self.facility_by_id = self._by_id(FACILITY)
        self.asset_by_id = self._by_id(ASSET)
        self.contacts_by_customer = self._by_parent(CONTACT, "customer_id")
        self.facilities_by_customer = self._by_parent(FACILITY, "customer_id")
        self.assets_by_facility = self._by_parent(ASSET, "facility_id")
        self.field_definitions_by_entity: DataLoader[str, list[Row]] = DataLoader(
            self._load_definitions
        )
        # Credentials: only those the caller may see (portal users: their public ones).
        self.credential_by_id: DataLoader[UUID, Row | None] = DataLoader(self._load_credentials)
        self.credentials_by_customer = self._credentials_by("customer_id")
        self.credentials_by_contact = self._credentials_by("contact_id")
        # The type of a bare record uuid (`node(id:)`): every `node` of a request in one batch.
        self.entity_type_by_id: DataLoader[UUID, EntityType | None] = DataLoader(
            self._load_entity_types
        )

    def release(self) -> None:
        """Drop every cached row. The loaders and the context refer to each other, so
        what they hold would wait for the cycle collector; a list page's thousands of rows
        made each collection pause the worker for hundreds of milliseconds."""
        for loader in vars(self).values():
            if isinstance(loader, DataLoader):
                loader.clear_all()
                loader.batch = None

    def _by_id(self, spec: EntitySpec) -> DataLoader[UUID, Row | None]:
        async def load(ids: Sequence[UUID]) -> list[Row | None]:
            org_id = await self._ctx.org_id()
            async with self._ctx.read() as conn:
                rows = await records.by_ids(conn, spec, org_id, ids)
            return rows_in_id_order(rows, ids)

        return DataLoader(load)

    def _by_parent(self, spec: EntitySpec, column: str) -> DataLoader[UUID, list[Row]]:
        async def load(parent_ids: Sequence[UUID]) -> list[list[Row]]:
            org_id = await self._ctx.org_id()
            async with self._ctx.read() as conn:
                return await records.by_parent(conn, spec, org_id, column, parent_ids)

        return DataLoader(load)

    async def _credential_visibility(self) -> credentials.Visibility:
        user = await self._ctx.user()
        return credentials.Visibility.of(user.role.value, user.customer_id)

    async def _load_credentials(self, ids: Sequence[UUID]) -> list[Row | None]:
        org_id = await self._ctx.org_id()
        seen = await self._credential_visibility()
        async with self._ctx.read() as conn:
            rows = await credentials.by_ids(conn, org_id, ids, seen)
        return rows_in_id_order(rows, ids)

    def _credentials_by(self, column: str) -> DataLoader[UUID, list[Row]]:
        async def load(parent_ids: Sequence[UUID]) -> list[list[Row]]:
            org_id = await self._ctx.org_id()
            seen = await self._credential_visibility()
            async with self._ctx.read() as conn:
                return await credentials.by_parent(conn, org_id, column, parent_ids, seen)

        return DataLoader(load)

    async def _load_entity_types(self, ids: Sequence[UUID]) -> list[EntityType | None]:
        org_id = await self._ctx.org_id()
        async with self._ctx.read() as conn:
            found = await records.entity_types(conn, org_id, ids)
        return [found.get(i) for i in ids]

    async def _load_definitions(self, entity_types: Sequence[str]) -> list[list[Row]]:
        org_id = await self._ctx.org_id()
        async with self._ctx.read() as conn:
            rows = await custom_fields.definitions_for(conn, org_id, entity_types)
        return [[r for r in rows if r["entity_type"] == t] for t in entity_types]
