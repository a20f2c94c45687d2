"""The Contact type (a person at a customer), its inputs and results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import strawberry

from resolvers.context import Info
from schema.custom_fields import CustomFieldValue, CustomFieldValueInput, values_of
from schema.customers import PHONE, Customer, Phone, PhoneInput
from schema.encoding import Nested, ObjectSpec, typed_builder
from schema.errors import EditConflict, Forbidden, NotFound, ValidationError
from schema.node import Node
from schema.pagination import After, Connection, first_doc
from schema.records import RECORD_NAMES, RECORD_PRIVATE, SyncedRecord, record_fields

if TYPE_CHECKING:
    from schema.credentials import Credential


@strawberry.type(description="A person at a customer.")
class Contact(Node, SyncedRecord):
    """A contact."""

    first_name: str | None = strawberry.field(description="First name.")
    last_name: str | None = strawberry.field(description="Last name.")
    title: str | None = strawberry.field(description="Job title or role.")
    email: str | None = strawberry.field(description="Email address.")
    phones: list[Phone] = strawberry.field(description="Phone numbers.")
    notes: str | None = strawberry.field(description="Free notes.")
    uuid: strawberry.Private[UUID]
    customer_uuid: strawberry.Private[UUID]
    stored_custom_fields: strawberry.Private[dict[str, Any]]

    @strawberry.field(description="Custom field values, in definition order.")
    async def custom_fields(self, info: Info) -> list[CustomFieldValue]:
        """Values paired with their definitions."""
        return await values_of(info, "CONTACT", self.stored_custom_fields)

    @strawberry.field(description="The customer this person belongs to.")
    async def customer(self, info: Info) -> Customer | None:
        """Null only if the customer was deleted meanwhile."""
        row = await info.context.loaders.customer_by_id.load(self.customer_uuid)
        return Customer.from_row(row) if row else None

    @strawberry.field(
        description="Credentials of this contact, masked; portal users see only public ones."
    )
    async def credentials(
        self, info: Info
    ) -> list[Annotated[Credential, strawberry.lazy("schema.credentials")]]:
        """Live credentials the caller may see, by name."""
        from schema.credentials import Credential

        rows = await info.context.loaders.credentials_by_contact.load(self.uuid)
        return [Credential.from_row(r) for r in rows]

    @strawberry.field(
        description="Credentials of this contact, masked, a page at a time by name (a Relay"
        " connection; `credentials` is the whole list); portal users see only public ones."
    )
    async def credentials_connection(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description=first_doc(20, "credentials"))] = 20,
        after: After = None,
    ) -> Connection[Annotated[Credential, strawberry.lazy("schema.credentials")]]:
        """Keyset-paginated live credentials the caller may see."""
        from resolvers.lists import children_connection
        from schema.credentials import Credential

        loaders = info.context.loaders.credential_pages_by_contact
        return await children_connection(
            info, loaders, self.uuid, Credential.from_row, first=first, after=after
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Contact:
        """From a ``contacts`` row (read as ``CONTACT_ROW`` says)."""
        return typed_builder(CONTACT_ROW, cls)(row)


# A Contact from its row (custom fields: see ``schema.customers.CUSTOMER_ROW``).
CONTACT_ROW = ObjectSpec(
    name="Contact",
    fields={
        **record_fields("Contact"),
        "firstName": "v['first_name']",
        "lastName": "v['last_name']",
        "title": "v['title']",
        "email": "v['email']",
        "phones": Nested("v['phones']", PHONE),
        "notes": "v['notes']",
    },
    names=RECORD_NAMES,
    private={**RECORD_PRIVATE, "customer_uuid": "v['customer_id']"},
)


@strawberry.input(description="Fields of a contact; on update omitted fields keep their values.")
class ContactFields:
    """Contact fields."""

    first_name: str | None = strawberry.field(default=strawberry.UNSET, description="First name.")
    last_name: str | None = strawberry.field(default=strawberry.UNSET, description="Last name.")
    title: str | None = strawberry.field(default=strawberry.UNSET, description="Job title or role.")
    email: str | None = strawberry.field(default=strawberry.UNSET, description="Email address.")
    phones: list[PhoneInput] | None = strawberry.field(
        default=strawberry.UNSET, description="Phone numbers (replaces the list)."
    )
    notes: str | None = strawberry.field(default=strawberry.UNSET, description="Free notes.")
    custom_fields: list[CustomFieldValueInput] | None = strawberry.field(
        default=strawberry.UNSET,
        description="Custom field values to set, merged by key: a null value clears its key;"
        " an empty list or null changes nothing.",
    )


@strawberry.input(description="A new contact of a customer.")
class CreateContactInput(ContactFields):
    """Contact plus its customer."""

    customer_id: strawberry.ID = strawberry.field(description="Global id of the customer.")


ContactResult = Annotated[
    Contact | ValidationError | NotFound | Forbidden | EditConflict,
    strawberry.union("ContactResult", description="A contact, or why the write was refused."),
]
