"""Masked credentials: the Credential type (never its password), inputs, results, the
reveal result and the access report."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import strawberry

from resolvers.context import Info
from schema.customers import Customer
from schema.errors import (
    DecryptionFailed,
    Forbidden,
    NoPassword,
    NotFound,
    RateLimited,
    ValidationError,
)
from schema.node import Node, to_global_id
from schema.records import SyncedRecord

if TYPE_CHECKING:
    from schema.contacts import Contact


@strawberry.type(
    description="A stored login of a customer or contact (gate code, router, portal). The"
    " password is never part of it: see `hasPassword` and `revealCredentialPassword`."
)
class Credential(Node, SyncedRecord):
    """A masked credential."""

    name: str = strawberry.field(description="What it is for, e.g. 'Gate code'.")
    username: str | None = strawberry.field(description="User name or email.")
    url: str | None = strawberry.field(description="Host or URL it logs in to.")
    notes: str | None = strawberry.field(description="Free notes (stored unencrypted).")
    is_public: bool = strawberry.field(
        description="Public: the customer's portal users see it; otherwise internal."
    )
    has_password: bool = strawberry.field(
        description="A password is stored (encrypted); reveal it with `revealCredentialPassword`."
    )
    uuid: strawberry.Private[UUID]
    customer_uuid: strawberry.Private[UUID]
    contact_uuid: strawberry.Private[UUID | None]

    @strawberry.field(description="The customer it belongs to (a contact's customer for theirs).")
    async def customer(self, info: Info) -> Customer | None:
        """Null only if the customer was deleted meanwhile."""
        row = await info.context.loaders.customer_by_id.load(self.customer_uuid)
        return Customer.from_row(row) if row else None

    @strawberry.field(description="The contact it belongs to; null for a customer's credential.")
    async def contact(
        self, info: Info
    ) -> Annotated[Contact, strawberry.lazy("schema.contacts")] | None:
        """The contact, if any."""
        from schema.contacts import Contact

        if self.contact_uuid is None:
            return None
        row = await info.context.loaders.contact_by_id.load(self.contact_uuid)
        return Contact.from_row(row) if row else None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Credential:
        """From a ``credentials`` row (its encrypted columns are never read here)."""
        return cls(
            id=to_global_id("Credential", row["id"]),
            record_id=strawberry.ID(str(row["id"])),
            uuid=row["id"],
            customer_uuid=row["customer_id"],
            contact_uuid=row["contact_id"],
            name=row["name"],
            username=row["username"],
            url=row["url"],
            notes=row["notes"],
            is_public=row["is_public"],
            has_password=row["has_password"],
            version=row["version"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@strawberry.input(description="Fields of a credential; on update omitted fields keep their values.")
class CredentialFields:
    """Credential fields."""

    name: str | None = strawberry.field(
        default=strawberry.UNSET, description="What it is for (required, up to 2,048 characters)."
    )
    username: str | None = strawberry.field(
        default=strawberry.UNSET, description="User name or email (up to 2,048 characters)."
    )
    url: str | None = strawberry.field(
        default=strawberry.UNSET, description="Host or URL (up to 2,048 characters)."
    )
    notes: str | None = strawberry.field(
        default=strawberry.UNSET, description="Free notes, stored unencrypted (up to 10,000)."
    )
    is_public: bool | None = strawberry.field(
        default=strawberry.UNSET,
        description="Public (visible to the customer's portal users) or internal (default).",
    )
    password: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="The secret, encrypted on arrival (up to 1,024 characters). On update:"
        " omit to keep it, null or an empty string to remove it.",
    )


@strawberry.input(description="A new credential of a customer or of one of its contacts.")
class CreateCredentialInput(CredentialFields):
    """Credential plus where it hangs."""

    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Global id of the customer (or give `contactId`)."
    )
    contact_id: strawberry.ID | None = strawberry.field(
        default=None, description="Global id of the contact; the credential joins its customer."
    )


@strawberry.type(description="A password, revealed once to you and recorded in the access log.")
class RevealedPassword:
    """The secret. Show it, do not store it."""

    credential_id: strawberry.ID = strawberry.field(description="Global id of the credential.")
    password: str = strawberry.field(description="The password in clear.")
    revealed_at: datetime = strawberry.field(description="When the reveal was logged.")


@strawberry.type(
    description="One password reveal: who looked at which credential, and when. Admins"
    " only: `node(id:)` gives null to anyone else."
)
class CredentialAccess(Node):
    """An access-log row."""

    id: strawberry.ID = strawberry.field(description="Global id of this access-log entry.")
    revealed_at: datetime = strawberry.field(description="When.")
    user_id: strawberry.ID = strawberry.field(description="Global id of the user who revealed.")
    # Non-null like `Device.userEmail` (a `node` selection of both must agree): users are
    # deactivated, never deleted, so the report's join always finds the revealing user.
    user_email: str = strawberry.field(description="That user's email.")
    user_name: str | None = strawberry.field(description="That user's name.")
    credential_id: strawberry.ID = strawberry.field(description="Global id of the credential.")
    credential_name: str | None = strawberry.field(
        description="Its name now (kept after the credential is deleted)."
    )
    customer_id: strawberry.ID = strawberry.field(description="Global id of its customer.")
    device_id: strawberry.ID | None = strawberry.field(
        description="Global id of the device it was revealed on, if the client named one."
    )
    client_address: str | None = strawberry.field(description="Network address of the client.")
    customer_uuid: strawberry.Private[UUID]

    @strawberry.field(description="The customer, unless it was deleted since.")
    async def customer(self, info: Info) -> Customer | None:
        """The credential's customer."""
        row = await info.context.loaders.customer_by_id.load(self.customer_uuid)
        return Customer.from_row(row) if row else None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CredentialAccess:
        """From an access-report row."""
        return cls(
            id=to_global_id("CredentialAccess", row["id"]),
            revealed_at=row["revealed_at"],
            user_id=to_global_id("User", row["user_id"]),
            user_email=row["user_email"],
            user_name=row["user_name"],
            credential_id=to_global_id("Credential", row["credential_id"]),
            credential_name=row["credential_name"],
            customer_id=to_global_id("Customer", row["customer_id"]),
            customer_uuid=row["customer_id"],
            device_id=to_global_id("Device", row["device_id"]) if row["device_id"] else None,
            client_address=row["client_address"],
        )


@strawberry.input(description="Access report filters; all given ones must match.")
class CredentialAccessFilter:
    """Filters of the access report."""

    user_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only reveals by this user."
    )
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only credentials of this customer (and its contacts)."
    )
    credential_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only this credential."
    )
    from_: datetime | None = strawberry.field(
        default=None, name="from", description="At or after this time."
    )
    to: datetime | None = strawberry.field(default=None, description="Before this time.")


CredentialResult = Annotated[
    Credential | ValidationError | NotFound | Forbidden,
    strawberry.union("CredentialResult", description="A credential, or why the write was refused."),
]

RevealResult = Annotated[
    RevealedPassword | NotFound | Forbidden | NoPassword | RateLimited | DecryptionFailed,
    strawberry.union(
        "RevealResult",
        description="The password (logged), or why not; a refusal reveals and logs nothing.",
    ),
]
