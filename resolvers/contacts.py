"""Contact queries and mutations."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import strawberry

from db.entities import CONTACT
from resolvers.context import Info
from resolvers.lists import child_connection, parent_filter
from resolvers.writes import delete_record, link, save_record
from schema.contacts import Contact, ContactFields, ContactResult, CreateContactInput
from schema.custom_fields import CUSTOM_FIELDS, set_custom_fields
from schema.customers import DeletedRecord, DeleteResult
from schema.errors import UserError
from schema.pagination import After, Connection, OfCustomer, first_doc
from schema.records import BASE_VERSION_DOC, patch_from
from schema.scalars import VersionVector


def contact_patch(data: ContactFields) -> dict[str, Any]:
    """Table columns from a contact input."""
    patch = patch_from(data, exclude=CUSTOM_FIELDS)
    patch.pop("customer_id", None)
    set_custom_fields(patch, data.custom_fields)
    if "phones" in patch and patch["phones"] is None:
        patch["phones"] = []
    return patch


@strawberry.type
class ContactQueries:
    """Contact reads."""

    @strawberry.field(description="Contacts, optionally of one customer, by last name.")
    async def contacts(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description=first_doc(20))] = 20,
        after: After = None,
        customer_id: OfCustomer = None,
        search: Annotated[
            str | None,
            strawberry.argument(
                description="Only those whose first name, last name or email contains this text,"
                " any case."
            ),
        ] = None,
    ) -> Connection[Contact]:
        """Keyset-paginated contact list."""
        equals = parent_filter(customer_id=(customer_id, "Customer"))
        return await child_connection(
            info, CONTACT, Contact.from_row, equals=equals, search=search, first=first, after=after
        )


@strawberry.type
class ContactMutations:
    """Contact writes."""

    @strawberry.mutation(description="Add a contact to a customer.", graphql_type=ContactResult)
    async def create_contact(
        self,
        info: Info,
        input: Annotated[
            CreateContactInput,
            strawberry.argument(description="The new contact's fields and its customer."),
        ],
    ) -> Contact | UserError:
        """New contact."""
        customer = link(input.customer_id, "Customer")
        if not isinstance(customer, UUID):
            return customer
        return await save_record(
            info,
            CONTACT,
            Contact.from_row,
            global_id=None,
            patch=contact_patch(input),
            links={"customer_id": customer},
        )

    @strawberry.mutation(description="Change a contact's fields.", graphql_type=ContactResult)
    async def update_contact(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The contact's global `id` or its uuid (`recordId`)."),
        ],
        input: Annotated[
            ContactFields,
            strawberry.argument(
                description="The fields to change; omitted fields keep their values."
            ),
        ],
        base_version: Annotated[
            VersionVector | None,
            strawberry.argument(description=BASE_VERSION_DOC),
        ] = None,
    ) -> Contact | UserError:
        """Partial update."""
        return await save_record(
            info,
            CONTACT,
            Contact.from_row,
            global_id=id,
            patch=contact_patch(input),
            base_version=base_version,
        )

    @strawberry.mutation(
        description="Delete a contact (devices receive a tombstone).", graphql_type=DeleteResult
    )
    async def delete_contact(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="The contact's global `id` or its uuid (`recordId`)."),
        ],
    ) -> DeletedRecord | UserError:
        """Delete."""
        return await delete_record(info, CONTACT, id)
