"""Users, roles, capabilities and sign-in results."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

import strawberry

from schema.errors import (
    Duplicate,
    Forbidden,
    InvalidCredentials,
    NotFound,
    RateLimited,
    ValidationError,
)
from schema.node import Node, to_global_id


@strawberry.enum(description="What a user is in the dealer's account.")
class UserRole(enum.Enum):
    """Roles."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    ADMIN = strawberry.enum_value(
        "ADMIN",
        description="Manages the account: users, custom fields, conflict policies, external"
        " sources; reads and edits every record.",
    )
    TECHNICIAN = strawberry.enum_value(
        "TECHNICIAN", description="Reads and edits records; manages no users or settings."
    )
    PORTAL = strawberry.enum_value(
        "PORTAL",
        description="A customer's own user: reads that one customer's records only; edits no"
        " records.",
    )


@strawberry.type(description="Per-user capabilities an admin grants.")
class Capabilities:
    """Capability flags."""

    sync_by_customer: bool = strawberry.field(description="May choose which customers sync.")
    view_credentials: bool = strawberry.field(description="May reveal credential passwords.")
    create_credentials: bool = strawberry.field(description="May add credentials.")
    edit_credentials: bool = strawberry.field(description="May change credentials.")
    delete_credentials: bool = strawberry.field(description="May delete credentials.")


@strawberry.type(description="A person who signs in.")
class User(Node):
    """A user of the dealer's account."""

    # Always set; nullable like Customer.email and Contact.email, so one selection of
    # `email` on Node (`... on User { email } ... on Customer { email }`) is valid GraphQL.
    email: str | None = strawberry.field(
        description="Sign-in email (always set; nullable only to agree with the other Node types"
        " that have an `email`)."
    )
    name: str = strawberry.field(description="Display name.")
    role: UserRole = strawberry.field(description="Role.")
    active: bool = strawberry.field(description="Inactive users cannot sign in.")
    capabilities: Capabilities = strawberry.field(description="Granted capabilities.")
    created_at: datetime = strawberry.field(description="When the user was added.")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> User:
        """From a ``users`` row (never exposes the password hash)."""
        return cls(
            id=to_global_id("User", row["id"]),
            email=row["email"],
            name=row["name"],
            role=UserRole(row["role"]),
            active=row["active"],
            capabilities=Capabilities(
                sync_by_customer=row["can_sync_by_customer"],
                view_credentials=row["can_view_credentials"],
                create_credentials=row["can_create_credentials"],
                edit_credentials=row["can_edit_credentials"],
                delete_credentials=row["can_delete_credentials"],
            ),
            created_at=row["created_at"],
        )


@strawberry.type(description="Signed in: send the token as `Authorization: Bearer <token>`.")
class LoginSuccess:
    """A bearer token and who it is for."""

    token: str = strawberry.field(description="Bearer token.")
    expires_at: datetime = strawberry.field(description="When the token stops working.")
    user: User = strawberry.field(description="The signed-in user.")


LoginResult = Annotated[
    LoginSuccess | InvalidCredentials | RateLimited,
    strawberry.union("LoginResult", description="A token, or why sign-in failed."),
]


@strawberry.input(description="Capabilities to set; omitted ones keep their values.")
class CapabilitiesInput:
    """Partial capabilities."""

    sync_by_customer: bool | None = strawberry.field(
        default=strawberry.UNSET, description="May choose which customers sync."
    )
    view_credentials: bool | None = strawberry.field(
        default=strawberry.UNSET, description="May reveal credential passwords."
    )
    create_credentials: bool | None = strawberry.field(
        default=strawberry.UNSET, description="May add credentials."
    )
    edit_credentials: bool | None = strawberry.field(
        default=strawberry.UNSET, description="May change credentials."
    )
    delete_credentials: bool | None = strawberry.field(
        default=strawberry.UNSET, description="May delete credentials."
    )


@strawberry.input(description="A new user.")
class CreateUserInput:
    """Fields of a new user."""

    email: str = strawberry.field(description="Email address.")
    name: str = strawberry.field(description="Name.")
    password: str = strawberry.field(description="At least 10 characters.")
    role: UserRole = strawberry.field(
        default=UserRole.TECHNICIAN, description="Role of the new user."
    )
    capabilities: CapabilitiesInput | None = strawberry.field(
        default=None, description="Capabilities to grant."
    )
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Portal users only: the customer they belong to."
    )


UserResult = Annotated[
    User | ValidationError | NotFound | Duplicate | Forbidden,
    strawberry.union("UserResult", description="A user, or why the change was refused."),
]


def capability_columns(caps: CapabilitiesInput) -> dict[str, bool]:
    """``can_*`` column values of the capabilities the input sets."""
    return {
        f"can_{name}": bool(value)
        for name, value in vars(caps).items()
        if value is not strawberry.UNSET and value is not None
    }
