"""Relay's ``node(id:)``: any object by global id, or a synced record by its uuid."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from uuid import UUID

import strawberry

from db.entities import EntityType
from db.queries.records import sees_customer
from resolvers.context import CurrentUser, Info
from resolvers.sync import conflict_node, device_node
from schema.assets import Asset
from schema.contacts import Contact
from schema.credentials import Credential, CredentialAccess
from schema.custom_fields import CustomFieldDefinition
from schema.customers import Customer
from schema.external import ExternalSource, ImportBatch
from schema.facilities import Facility
from schema.node import InvalidIdError, Node, bare_uuid, from_global_id
from schema.users import User

# The GraphQL type of each synced record type (a bare uuid names no type: it is looked up).
TYPE_NAMES = {
    EntityType.CUSTOMER: "Customer",
    EntityType.CONTACT: "Contact",
    EntityType.FACILITY: "Facility",
    EntityType.ASSET: "Asset",
    EntityType.CREDENTIAL: "Credential",
}

# Records only admins may read: `node(id:)` resolves them for admins alone.
ADMIN_KINDS = frozenset({"ExternalSource", "ImportBatch", "CredentialAccess"})
# Built with the device's sync state and the conflict inbox's rules (resolvers/sync.py).
SYNC_KINDS: dict[str, Callable[[Info, UUID], Awaitable[Node | None]]] = {
    "Device": device_node,
    "SyncConflict": conflict_node,
}


@strawberry.type
class NodeQueries:
    """Global object lookup."""

    @strawberry.field(
        description="Any object by its global id, or a synced record by its uuid (`recordId`);"
        " null if unknown or not visible."
    )
    async def node(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(description="A global id, or a synced record's uuid."),
        ],
    ) -> Node | None:
        """Fetch by global id or record uuid."""
        user = await info.context.user()
        loaders = info.context.loaders
        try:
            type_name, record_id = from_global_id(id)
        except InvalidIdError:
            bare = bare_uuid(id)
            if bare is None:
                return None
            # Batched: every `node` of the request with a bare uuid is one statement.
            entity = await loaders.entity_type_by_id.load(bare)
            if entity is None:
                return None
            type_name, record_id = TYPE_NAMES[entity], bare
        if not _may_see(user, type_name, record_id):
            return None
        if type_name in SYNC_KINDS:
            return await SYNC_KINDS[type_name](info, record_id)
        kinds: dict[str, tuple[Any, Callable[[dict[str, Any]], Node]]] = {
            "Customer": (loaders.customer_by_id, Customer.from_row),
            "Contact": (loaders.contact_by_id, Contact.from_row),
            "Facility": (loaders.facility_by_id, Facility.from_row),
            "Asset": (loaders.asset_by_id, Asset.from_row),
            # Loaded only if visible to the caller (portal users: their public ones).
            "Credential": (loaders.credential_by_id, Credential.from_row),
            "User": (loaders.user_by_id, User.from_row),
            "CustomFieldDefinition": (
                loaders.field_definition_by_id,
                CustomFieldDefinition.from_row,
            ),
            "ExternalSource": (loaders.external_source_by_id, ExternalSource.from_row),
            "ImportBatch": (loaders.import_batch_by_id, ImportBatch.from_row),
            "CredentialAccess": (loaders.credential_access_by_id, CredentialAccess.from_row),
        }
        if type_name not in kinds:
            return None
        loader, from_row = kinds[type_name]
        row = await loader.load(record_id)
        if row is None:
            return None
        if type_name in TYPE_NAMES.values() and not sees_customer(
            user.role.value, user.customer_id, row["customer_id"]
        ):
            return None
        return from_row(row)


def _may_see(user: CurrentUser, type_name: str, record_id: UUID) -> bool:
    """Whether the caller may see an object of ``type_name`` at all (before reading it), by
    the rule of the query that lists such objects; the portal rule of synced records is
    checked on the row."""
    if type_name in ADMIN_KINDS:
        # Their queries (externalSources, importBatches, credentialAccessReport) are
        # admins' only; to anyone else such an id is as unknown as any unseen one.
        return user.is_admin
    if type_name == "User":
        # `users` is admins' only; anyone else sees themself (`me`).
        return user.is_admin or record_id == user.id
    return True
