"""Per-request DataLoaders (``<Entity>By<Key>Loader``): one SQL statement per batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection
from strawberry.dataloader import DataLoader

from db.entities import ASSET, CONTACT, CUSTOMER, FACILITY, EntitySpec, EntityType
from db.queries import credentials, custom_fields, external, records, users
from db.queries.pages import Page, PageRequest, rows_in_id_order
from db.queries.records import ChildFilter, ChildList

if TYPE_CHECKING:
    from resolvers.context import Context

Row = dict[str, Any]
# A read of the tenant's rows with some ids, in any order.
ByIds = Callable[[AsyncConnection, UUID, Sequence[UUID]], Awaitable[list[Row]]]


# A page of a parent's children: (parent, page size, `after` key).
PageKey = tuple[UUID, int, tuple[Any, UUID] | None]


class ChildLoaders:
    """The connection fields of one child list (``Customer.contactsConnection``, ...): every
    parent's page of a request in one statement per distinct (`first`, `after`), and every
    parent's ``totalCount`` in one, so a customer list's connections are not a query each."""

    def __init__(
        self,
        ctx: Context,
        child: ChildList,
        condition: Callable[[], Awaitable[ChildFilter]] | None = None,
    ) -> None:
        self._ctx = ctx
        self._child = child
        self._condition = condition
        self.pages: DataLoader[PageKey, Page] = DataLoader(self._load_pages)
        self.counts: DataLoader[UUID, int] = DataLoader(self._load_counts)

    async def _filter(self) -> ChildFilter:
        return records.NO_FILTER if self._condition is None else await self._condition()

    async def _load_pages(self, keys: Sequence[PageKey]) -> list[Page]:
        org_id = await self._ctx.org_id()
        condition = await self._filter()
        # Parents asking for the same page size and position share a statement (a list's
        # rows all ask for the first page).
        groups: dict[tuple[int, tuple[Any, UUID] | None], list[UUID]] = {}
        for parent, first, after in keys:
            groups.setdefault((first, after), []).append(parent)
        found: dict[PageKey, Page] = {}
        async with self._ctx.read() as conn:
            for (first, after), parents in groups.items():
                request = PageRequest(first=first, after=after)
                pages = await records.child_pages(
                    conn, self._child, org_id, parents, request, condition
                )
                for parent, page in zip(parents, pages, strict=True):
                    found[(parent, first, after)] = page
        return [found[key] for key in keys]

    async def _load_counts(self, parents: Sequence[UUID]) -> list[int]:
        org_id = await self._ctx.org_id()
        condition = await self._filter()
        async with self._ctx.read() as conn:
            return await records.child_counts(conn, self._child, org_id, parents, condition)


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

    # Made on first use (most requests use none of them); `release` finds them in vars().
    # Paged children (`...Connection` fields of customers, contacts and facilities).
    @cached_property
    def contact_pages_by_customer(self) -> ChildLoaders:
        """Pages of a customer's contacts."""
        return ChildLoaders(self._ctx, ChildList.of(CONTACT, "customer_id"))

    @cached_property
    def facility_pages_by_customer(self) -> ChildLoaders:
        """Pages of a customer's facilities."""
        return ChildLoaders(self._ctx, ChildList.of(FACILITY, "customer_id"))

    @cached_property
    def asset_pages_by_facility(self) -> ChildLoaders:
        """Pages of a facility's assets."""
        return ChildLoaders(self._ctx, ChildList.of(ASSET, "facility_id"))

    @cached_property
    def credential_pages_by_customer(self) -> ChildLoaders:
        """Pages of the credentials the caller may see of a customer (and its contacts)."""
        return ChildLoaders(
            self._ctx, credentials.child_list("customer_id"), self._credential_condition
        )

    @cached_property
    def credential_pages_by_contact(self) -> ChildLoaders:
        """Pages of the credentials the caller may see of a contact."""
        return ChildLoaders(
            self._ctx, credentials.child_list("contact_id"), self._credential_condition
        )

    # Objects `node(id:)` reads whose visibility the resolver checks: users (an admin sees
    # every one, anyone else only themself), field definitions (everyone), and the
    # admin-only records.
    @cached_property
    def user_by_id(self) -> DataLoader[UUID, Row | None]:
        """Users by id."""
        return self._by_ids(users.users_by_ids)

    @cached_property
    def field_definition_by_id(self) -> DataLoader[UUID, Row | None]:
        """Custom field definitions by id."""
        return self._by_ids(custom_fields.definitions_by_ids)

    @cached_property
    def external_source_by_id(self) -> DataLoader[UUID, Row | None]:
        """External sources by id."""
        return self._by_ids(external.sources_by_ids)

    @cached_property
    def import_batch_by_id(self) -> DataLoader[UUID, Row | None]:
        """Import batches by id."""
        return self._by_ids(external.batches_by_ids)

    @cached_property
    def credential_access_by_id(self) -> DataLoader[UUID, Row | None]:
        """Access-report rows by id."""
        return self._by_ids(credentials.accesses_by_ids)

    def release(self) -> None:
        """Drop every cached row. The loaders and the context refer to each other, so
        what they hold would wait for the cycle collector; a list page's thousands of rows
        made each collection pause the worker for hundreds of milliseconds."""
        for value in vars(self).values():
            loaders = [value.pages, value.counts] if isinstance(value, ChildLoaders) else [value]
            for loader in loaders:
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

    def _by_ids(self, fetch: ByIds) -> DataLoader[UUID, Row | None]:
        async def load(ids: Sequence[UUID]) -> list[Row | None]:
            org_id = await self._ctx.org_id()
            async with self._ctx.read() as conn:
                rows = await fetch(conn, org_id, ids)
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

    async def _credential_condition(self) -> ChildFilter:
        return (await self._credential_visibility()).condition()

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
