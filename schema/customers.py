"""The Customer type, its nested value types, inputs, filters and mutation results."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import strawberry

from resolvers.context import Info
from schema.custom_fields import (
    Badge,
    CustomFieldValue,
    CustomFieldValueInput,
    badges_of,
    values_of,
)
from schema.encoding import Nested, ObjectSpec, typed_builder
from schema.errors import (
    EditConflict,
    EmailTaken,
    Forbidden,
    HasAttachedRecords,
    NotFound,
    ValidationError,
)
from schema.node import Node
from schema.pagination import After, Connection, first_doc
from schema.records import RECORD_NAMES, RECORD_PRIVATE, SyncedRecord, record_fields

if TYPE_CHECKING:
    from schema.contacts import Contact
    from schema.credentials import Credential
    from schema.facilities import Facility


@strawberry.enum(description="Kinds of phone number.")
class PhoneType(enum.Enum):
    """Phone kinds."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    MOBILE = strawberry.enum_value("MOBILE", description="A mobile phone.")
    HOME = strawberry.enum_value("HOME", description="A home line.")
    WORK = strawberry.enum_value("WORK", description="A work line.")
    FAX = strawberry.enum_value("FAX", description="A fax number.")
    OTHER = strawberry.enum_value("OTHER", description="Any other number.")


@strawberry.enum(description="What an address is used for.")
class AddressType(enum.Enum):
    """Address kinds."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    BILL_TO = strawberry.enum_value("BILL_TO", description="Where invoices go.")
    SHIP_TO = strawberry.enum_value("SHIP_TO", description="Where deliveries go.")
    PHYSICAL = strawberry.enum_value(
        "PHYSICAL", description="Where the customer is (e.g. for site visits)."
    )


@strawberry.type(description="A phone number.")
class Phone:
    """Typed phone number."""

    type: PhoneType = strawberry.field(description="Kind of number.")
    number: str = strawberry.field(description="The number as entered.")


# A Phone from its stored JSON object.
PHONE = ObjectSpec(name="Phone", fields={"type": "v['type']", "number": "v['number']"})

# The lines of a stored address JSON object (postal addresses and sites).
ADDRESS_LINES = {
    "line1": "v.get('line1')",
    "line2": "v.get('line2')",
    "city": "v.get('city')",
    "region": "v.get('region')",
    "postalCode": "v.get('postalCode')",
    "country": "v.get('country')",
}


@strawberry.type(description="A postal address.")
class Address:
    """Typed address."""

    type: AddressType = strawberry.field(description="Bill-to, ship-to or physical.")
    line1: str | None = strawberry.field(description="Street and number.")
    line2: str | None = strawberry.field(description="Suite, floor, etc.")
    city: str | None = strawberry.field(description="City.")
    region: str | None = strawberry.field(description="State or province.")
    postal_code: str | None = strawberry.field(description="Postal code.")
    country: str | None = strawberry.field(description="Country.")


# An Address from its stored JSON object.
ADDRESS = ObjectSpec(name="Address", fields={"type": "v['type']", **ADDRESS_LINES})


@strawberry.type(description="Billing and messaging settings of a customer.")
class CustomerSettings:
    """Customer settings."""

    tax_free: bool = strawberry.field(description="Invoices carry no tax.")
    tax_rate: float | None = strawberry.field(description="Tax rate in percent (0-100).")
    sms_enabled: bool = strawberry.field(description="Send text messages.")
    billing_emails: bool = strawberry.field(description="Send billing emails.")
    marketing_emails: bool = strawberry.field(description="Send marketing emails.")
    report_emails: bool = strawberry.field(description="Send service report emails.")
    no_email: bool = strawberry.field(description="Send no email at all (overrides the above).")


# CustomerSettings from the stored JSON object: unset toggles take their defaults.
CUSTOMER_SETTINGS = ObjectSpec(
    name="CustomerSettings",
    fields={
        "taxFree": "bool(v.get('taxFree', False))",
        "taxRate": "(None if (v.get('taxRate')) is None else float(v.get('taxRate')))",
        "smsEnabled": "bool(v.get('smsEnabled', False))",
        "billingEmails": "bool(v.get('billingEmails', True))",
        "marketingEmails": "bool(v.get('marketingEmails', False))",
        "reportEmails": "bool(v.get('reportEmails', True))",
        "noEmail": "bool(v.get('noEmail', False))",
    },
    names={"float": float, "bool": bool},
)


def display_name(business_name: str | None, first_name: str | None, last_name: str | None) -> str:
    """A customer's name as lists show it: the business name, else 'First Last'."""
    if business_name:
        return business_name
    return " ".join(p for p in (first_name, last_name) if p)


@strawberry.type(description="A customer of the dealer: a business or a person.")
class Customer(Node, SyncedRecord):
    """A customer; contacts, facilities and assets hang off it."""

    business_name: str | None = strawberry.field(description="Business name; shows first.")
    first_name: str | None = strawberry.field(description="First name of a person customer.")
    last_name: str | None = strawberry.field(description="Last name of a person customer.")
    email: str | None = strawberry.field(description="Primary email, unique per dealer.")
    phones: list[Phone] = strawberry.field(description="Phone numbers.")
    addresses: list[Address] = strawberry.field(description="Bill-to, ship-to, physical.")
    notification_emails: list[str] = strawberry.field(description="Extra notification emails.")
    invoice_cc_emails: list[str] = strawberry.field(description="Emails copied on invoices.")
    settings: CustomerSettings = strawberry.field(description="Billing and messaging settings.")
    archived: bool = strawberry.field(description="Archived: hidden and not synced.")
    uuid: strawberry.Private[UUID]
    stored_custom_fields: strawberry.Private[dict[str, Any]]

    @strawberry.field(description="Business name, else 'First Last'.")
    def display_name(self) -> str:
        """What lists show."""
        return display_name(self.business_name, self.first_name, self.last_name)

    @strawberry.field(description="Custom field values, in definition order.")
    async def custom_fields(self, info: Info) -> list[CustomFieldValue]:
        """Values paired with their definitions."""
        return await values_of(info, "CUSTOMER", self.stored_custom_fields)

    @strawberry.field(description="Badges from dropdown custom fields with an icon.")
    async def badges(self, info: Info) -> list[Badge]:
        """Badges of this customer."""
        return await badges_of(info, "CUSTOMER", self.stored_custom_fields)

    @strawberry.field(description="People at this customer.")
    async def contacts(
        self, info: Info
    ) -> list[Annotated[Contact, strawberry.lazy("schema.contacts")]]:
        """Live contacts, by last name."""
        from schema.contacts import Contact

        rows = await info.context.loaders.contacts_by_customer.load(self.uuid)
        return [Contact.from_row(r) for r in rows]

    @strawberry.field(description="Buildings and sites of this customer.")
    async def facilities(
        self, info: Info
    ) -> list[Annotated[Facility, strawberry.lazy("schema.facilities")]]:
        """Live facilities, by name."""
        from schema.facilities import Facility

        rows = await info.context.loaders.facilities_by_customer.load(self.uuid)
        return [Facility.from_row(r) for r in rows]

    @strawberry.field(
        description="Credentials of this customer and its contacts, masked; portal users see"
        " only public ones."
    )
    async def credentials(
        self, info: Info
    ) -> list[Annotated[Credential, strawberry.lazy("schema.credentials")]]:
        """Live credentials the caller may see, by name."""
        from schema.credentials import Credential

        rows = await info.context.loaders.credentials_by_customer.load(self.uuid)
        return [Credential.from_row(r) for r in rows]

    @strawberry.field(
        description="People at this customer, a page at a time by last name (a Relay"
        " connection; `contacts` is the whole list)."
    )
    async def contacts_connection(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description=first_doc(20, "contacts"))] = 20,
        after: After = None,
    ) -> Connection[Annotated[Contact, strawberry.lazy("schema.contacts")]]:
        """Keyset-paginated live contacts, every customer's of a list in one statement."""
        from resolvers.lists import children_connection
        from schema.contacts import Contact

        loaders = info.context.loaders.contact_pages_by_customer
        return await children_connection(
            info, loaders, self.uuid, Contact.from_row, first=first, after=after
        )

    @strawberry.field(
        description="Buildings and sites of this customer, a page at a time by name (a Relay"
        " connection; `facilities` is the whole list)."
    )
    async def facilities_connection(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description=first_doc(20, "facilities"))] = 20,
        after: After = None,
    ) -> Connection[Annotated[Facility, strawberry.lazy("schema.facilities")]]:
        """Keyset-paginated live facilities, every customer's of a list in one statement."""
        from resolvers.lists import children_connection
        from schema.facilities import Facility

        loaders = info.context.loaders.facility_pages_by_customer
        return await children_connection(
            info, loaders, self.uuid, Facility.from_row, first=first, after=after
        )

    @strawberry.field(
        description="Credentials of this customer and its contacts, masked, a page at a time"
        " by name (a Relay connection; `credentials` is the whole list); portal users see only"
        " public ones."
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

        loaders = info.context.loaders.credential_pages_by_customer
        return await children_connection(
            info, loaders, self.uuid, Credential.from_row, first=first, after=after
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Customer:
        """From a ``customers`` row (read as ``CUSTOMER_ROW`` says)."""
        return typed_builder(CUSTOMER_ROW, cls)(row)


# A Customer from its row. The fields the type resolves with DataLoaders (custom fields,
# badges, children) are read from what a compiled read attaches to the row instead
# (resolvers/selection_json/records.py adds them).
CUSTOMER_ROW = ObjectSpec(
    name="Customer",
    fields={
        **record_fields("Customer"),
        "businessName": "v['business_name']",
        "firstName": "v['first_name']",
        "lastName": "v['last_name']",
        "email": "v['email']",
        "phones": Nested("v['phones']", PHONE),
        "addresses": Nested("v['addresses']", ADDRESS),
        "notificationEmails": "list(v['notification_emails'])",
        "invoiceCcEmails": "list(v['invoice_cc_emails'])",
        "settings": Nested("v['settings']", CUSTOMER_SETTINGS, many=False),
        "archived": "v['archived']",
        "displayName": "DISPLAY_NAME(v['business_name'], v['first_name'], v['last_name'])",
    },
    names={**RECORD_NAMES, "DISPLAY_NAME": display_name},
    private=RECORD_PRIVATE,
)


@strawberry.input(description="A phone number.")
class PhoneInput:
    """Phone to store."""

    type: PhoneType = strawberry.field(description="Kind.")
    number: str = strawberry.field(description="The number: digits, spaces and + ( ) - . / x # *.")


@strawberry.input(description="A postal address.")
class AddressInput:
    """Address to store."""

    type: AddressType = strawberry.field(description="Kind.")
    line1: str | None = strawberry.field(default=None, description="Street and number.")
    line2: str | None = strawberry.field(default=None, description="Suite, floor, etc.")
    city: str | None = strawberry.field(default=None, description="City.")
    region: str | None = strawberry.field(default=None, description="State or province.")
    postal_code: str | None = strawberry.field(default=None, description="Postal code.")
    country: str | None = strawberry.field(default=None, description="Country.")


@strawberry.input(description="Settings to change; omitted ones keep their values.")
class CustomerSettingsInput:
    """Partial settings."""

    tax_free: bool | None = strawberry.field(
        default=strawberry.UNSET, description="Invoices carry no tax."
    )
    tax_rate: float | None = strawberry.field(
        default=strawberry.UNSET, description="Tax rate in percent (0-100)."
    )
    sms_enabled: bool | None = strawberry.field(
        default=strawberry.UNSET, description="Send text messages."
    )
    billing_emails: bool | None = strawberry.field(
        default=strawberry.UNSET, description="Send billing emails."
    )
    marketing_emails: bool | None = strawberry.field(
        default=strawberry.UNSET, description="Send marketing emails."
    )
    report_emails: bool | None = strawberry.field(
        default=strawberry.UNSET, description="Send service report emails."
    )
    no_email: bool | None = strawberry.field(
        default=strawberry.UNSET, description="Send no email at all."
    )


@strawberry.input(
    description="A new customer: a business name or a first or last name is required."
)
class CreateCustomerInput:
    """Fields of a new customer."""

    business_name: str | None = strawberry.field(
        default=strawberry.UNSET, description="Business name; shows first."
    )
    first_name: str | None = strawberry.field(default=strawberry.UNSET, description="First name.")
    last_name: str | None = strawberry.field(default=strawberry.UNSET, description="Last name.")
    email: str | None = strawberry.field(default=strawberry.UNSET, description="Email address.")
    phones: list[PhoneInput] | None = strawberry.field(
        default=strawberry.UNSET, description="Phone numbers (replaces the list)."
    )
    addresses: list[AddressInput] | None = strawberry.field(
        default=strawberry.UNSET, description="Addresses (replaces the list)."
    )
    notification_emails: list[str] | None = strawberry.field(
        default=strawberry.UNSET, description="Extra notification emails (replaces the list)."
    )
    invoice_cc_emails: list[str] | None = strawberry.field(
        default=strawberry.UNSET, description="Emails copied on invoices (replaces the list)."
    )
    settings: CustomerSettingsInput | None = strawberry.field(
        default=strawberry.UNSET,
        description="Settings to change; omitted settings keep their values.",
    )
    custom_fields: list[CustomFieldValueInput] | None = strawberry.field(
        default=strawberry.UNSET,
        description="Custom field values to set, merged by key: a null value clears its key;"
        " an empty list or null changes nothing.",
    )


@strawberry.input(
    description="Changes to a customer; omitted fields keep their values, null clears."
)
class UpdateCustomerInput(CreateCustomerInput):
    """Partial update (lists are replaced whole; settings and custom fields merge by key)."""


@strawberry.enum(description="Customer list orderings.")
class CustomerOrderField(enum.Enum):
    """Sort keys."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    NAME = strawberry.enum_value(
        "NAME", description="By name, any case: the business name, else last then first name."
    )
    CREATED_AT = strawberry.enum_value("CREATED_AT", description="By creation time.")
    UPDATED_AT = strawberry.enum_value("UPDATED_AT", description="By time of the last change.")


@strawberry.enum(description="Sort direction.")
class OrderDirection(enum.Enum):
    """Ascending or descending."""

    _value_: str  # for mypy: `.value` is the string, not the enum_value()

    ASC = strawberry.enum_value("ASC", description="Ascending: A to Z, oldest first.")
    DESC = strawberry.enum_value("DESC", description="Descending: Z to A, newest first.")


@strawberry.input(description="How to order customers.")
class CustomerOrder:
    """Sort key and direction."""

    field: CustomerOrderField = strawberry.field(
        default=CustomerOrderField.NAME, description="Sort key."
    )
    direction: OrderDirection = strawberry.field(
        default=OrderDirection.ASC, description="Sort direction."
    )


@strawberry.input(description="Customer list filters; all given ones must match.")
class CustomerFilter:
    """Filters."""

    search: str | None = strawberry.field(
        default=None, description="Name prefix or substring of name or email, any case."
    )
    archived: bool | None = strawberry.field(
        default=False,
        description="Archived only (true), active only (false, default), or all (null).",
    )
    email: str | None = strawberry.field(default=None, description="Exact primary email, any case.")


@strawberry.type(description="A record was deleted (a tombstone remains for devices).")
class DeletedRecord:
    """Delete succeeded."""

    id: strawberry.ID = strawberry.field(description="Global id of the deleted record.")
    deleted_at: datetime = strawberry.field(description="When.")


CustomerResult = Annotated[
    Customer | ValidationError | NotFound | EmailTaken | Forbidden | EditConflict,
    strawberry.union("CustomerResult", description="A customer, or why the write was refused."),
]

DeleteResult = Annotated[
    DeletedRecord | NotFound | HasAttachedRecords | Forbidden,
    strawberry.union("DeleteResult", description="The deleted id, or why delete was refused."),
]
