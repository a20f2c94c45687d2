"""Credential queries and mutations: masked lists, writes, the audited reveal, the report."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

import strawberry
from sqlalchemy.ext.asyncio import AsyncConnection

from db.commands import credentials as commands
from db.crypto import KeyRing
from db.errors import DomainError, NotFoundError
from db.queries import credentials as queries
from resolvers.context import CurrentUser, Info, PublicError
from resolvers.lists import page_connection, page_request, parent_filter
from resolvers.writes import bad_id, decode_id
from schema.credentials import (
    CreateCredentialInput,
    Credential,
    CredentialAccess,
    CredentialAccessFilter,
    CredentialFields,
    CredentialResult,
    RevealedPassword,
    RevealResult,
)
from schema.customers import DeletedRecord, DeleteResult
from schema.errors import Forbidden, UserError, error_from, forbidden
from schema.node import InvalidIdError, to_global_id
from schema.pagination import After, Connection, OfCustomer, first_doc
from schema.records import patch_from

T = TypeVar("T")

DENIED = {
    commands.CREATE: "you may not add credentials: an admin can grant 'create credentials'",
    commands.EDIT: "you may not change credentials: an admin can grant 'edit credentials'",
    commands.DELETE: "you may not delete credentials: an admin can grant 'delete credentials'",
}


def key_ring(info: Info) -> KeyRing:
    """The server's master key ring; a request-level error when none is configured."""
    ring = info.context.settings.key_ring()
    if ring is None:
        raise PublicError(
            "Credential encryption is not configured on this server: set FIELDSYNC_MASTER_KEYS",
            "NOT_CONFIGURED",
        )
    return ring


async def in_transaction(
    info: Info,
    action: Callable[[AsyncConnection, CurrentUser], Awaitable[T]],
    *,
    client_ids: dict[str, str],
) -> T | UserError:
    """Run ``action`` in one tenant transaction; a domain error rolls it back and becomes
    its union member (``client_ids`` maps an entity to the id the client sent)."""
    user = await info.context.user()
    try:
        async with info.context.write() as conn:
            return await action(conn, user)
    except DomainError as exc:
        entity = exc.entity if isinstance(exc, NotFoundError) else ""
        return error_from(exc, client_ids.get(entity))


async def _permitted(info: Info, capability: str) -> Forbidden | None:
    user = await info.context.user()
    if commands.may(user.role.value, user.capabilities, capability):
        return None
    return forbidden(DENIED[capability])


def _fields(data: CredentialFields) -> tuple[dict[str, Any], bool, str | None]:
    """(column values, whether the password changes, the new password or None)."""
    patch = patch_from(data)
    patch.pop("customer_id", None)
    patch.pop("contact_id", None)
    change_password = "password" in patch
    password = patch.pop("password", None) or None
    if "is_public" in patch and patch["is_public"] is None:
        patch["is_public"] = False
    return patch, change_password, password


@strawberry.type
class CredentialQueries:
    """Credential reads (never a password)."""

    @strawberry.field(
        description="Credentials, masked, by name; optionally of one customer or contact."
        " Portal users see only their customer's public ones."
    )
    async def credentials(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description=first_doc(20))] = 20,
        after: After = None,
        customer_id: OfCustomer = None,
        contact_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="Only those of this contact (global `id` or uuid)."),
        ] = None,
        search: Annotated[
            str | None,
            strawberry.argument(
                description="Only those whose name, username or URL contains this text, any case."
            ),
        ] = None,
    ) -> Connection[Credential]:
        """Keyset-paginated credential list."""
        user = await info.context.user()
        parents = parent_filter(
            customer_id=(customer_id, "Customer"), contact_id=(contact_id, "Contact")
        )
        request = page_request(info, first, after, sort_type=str)
        seen = queries.Visibility.of(user.role.value, user.customer_id)
        async with info.context.read() as conn:
            page, query = await queries.credential_page(
                conn,
                user.org_id,
                visibility=seen,
                customer_id=parents.get("customer_id"),
                contact_id=parents.get("contact_id"),
                search=search,
                request=request,
            )

        return page_connection(
            info, request, page, query, Credential.from_row, lambda r: (r["_sort"], r["id"])
        )

    @strawberry.field(
        description="Who revealed which credential password and when, newest first (admins only)."
    )
    async def credential_access_report(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description=first_doc(50, "reveals"))] = 50,
        after: After = None,
        filter: Annotated[
            CredentialAccessFilter | None,
            strawberry.argument(description="Which reveals; omitted: all of them."),
        ] = None,
    ) -> Connection[CredentialAccess]:
        """Keyset-paginated access log."""
        user = await info.context.user()
        if not user.is_admin:
            raise PublicError("Only admins may read the credential access report", "FORBIDDEN")
        flt = filter or CredentialAccessFilter()
        ids = parent_filter(
            user_id=(flt.user_id, "User"),
            customer_id=(flt.customer_id, "Customer"),
            credential_id=(flt.credential_id, "Credential"),
        )
        query_filter = queries.AccessFilter(
            user_id=ids.get("user_id"),
            customer_id=ids.get("customer_id"),
            credential_id=ids.get("credential_id"),
            since=_aware(flt.from_),
            until=_aware(flt.to),
        )
        request = page_request(info, first, after, descending=True, sort_type=datetime)
        async with info.context.read() as conn:
            page, query = await queries.access_page(conn, user.org_id, query_filter, request)

        return page_connection(
            info,
            request,
            page,
            query,
            CredentialAccess.from_row,
            lambda r: (r["revealed_at"], r["id"]),
        )


def _aware(value: datetime | None) -> datetime | None:
    """Times without an offset are taken as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@strawberry.type
class CredentialMutations:
    """Credential writes and the audited reveal."""

    @strawberry.mutation(
        description="Add a credential to a customer or a contact; its password is encrypted"
        " on arrival.",
        graphql_type=CredentialResult,
    )
    async def create_credential(
        self,
        info: Info,
        input: Annotated[
            CreateCredentialInput,
            strawberry.argument(
                description="The new credential's fields, its password and its customer or contact."
            ),
        ],
    ) -> Credential | UserError:
        """New credential."""
        denied = await _permitted(info, commands.CREATE)
        if denied is not None:
            return denied
        parents: dict[str, UUID] = {}
        for column, (global_id, type_name) in {
            "customer_id": (input.customer_id, "Customer"),
            "contact_id": (input.contact_id, "Contact"),
        }.items():
            if global_id is not None:
                try:
                    parents[column] = decode_id(global_id, type_name)
                except InvalidIdError as exc:
                    return bad_id(global_id, exc)
        values, _, password = _fields(input)
        ring = key_ring(info) if password is not None else None
        result = await in_transaction(
            info,
            lambda conn, user: commands.create(
                conn,
                org_id=user.org_id,
                customer_id=parents.get("customer_id"),
                contact_id=parents.get("contact_id"),
                values=values,
                password=password,
                keyring=ring,
                max_length=info.context.settings.max_string_length,
            ),
            client_ids={
                "customer": str(input.customer_id),
                "contact": str(input.contact_id),
            },
        )
        return Credential.from_row(result) if isinstance(result, dict) else result

    @strawberry.mutation(
        description="Change a credential; a new password is encrypted under a fresh key and nonce.",
        graphql_type=CredentialResult,
    )
    async def update_credential(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="The credential's global `id` or its uuid (`recordId`)."
            ),
        ],
        input: Annotated[
            CredentialFields,
            strawberry.argument(
                description="The fields to change; omitted fields keep their values."
            ),
        ],
    ) -> Credential | UserError:
        """Partial update."""
        denied = await _permitted(info, commands.EDIT)
        if denied is not None:
            return denied
        try:
            credential_id = decode_id(id, "Credential")
        except InvalidIdError as exc:
            return bad_id(id, exc)
        values, change_password, password = _fields(input)
        ring = key_ring(info) if password is not None else None
        result = await in_transaction(
            info,
            lambda conn, user: commands.update(
                conn,
                org_id=user.org_id,
                credential_id=credential_id,
                values=values,
                change_password=change_password,
                password=password,
                keyring=ring,
                max_length=info.context.settings.max_string_length,
            ),
            client_ids={"credential": id},
        )
        return Credential.from_row(result) if isinstance(result, dict) else result

    @strawberry.mutation(
        description="Delete a credential (devices receive a tombstone; the password is erased).",
        graphql_type=DeleteResult,
    )
    async def delete_credential(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="The credential's global `id` or its uuid (`recordId`)."
            ),
        ],
    ) -> DeletedRecord | UserError:
        """Delete."""
        denied = await _permitted(info, commands.DELETE)
        if denied is not None:
            return denied
        try:
            credential_id = decode_id(id, "Credential")
        except InvalidIdError as exc:
            return bad_id(id, exc)
        result = await in_transaction(
            info,
            lambda conn, user: commands.delete(
                conn, org_id=user.org_id, credential_id=credential_id
            ),
            client_ids={"credential": id},
        )
        if isinstance(result, dict):
            # The global id even when the credential was named by its uuid.
            record = to_global_id("Credential", credential_id)
            return DeletedRecord(id=record, deleted_at=result["updated_at"])
        return result

    @strawberry.mutation(
        description="Reveal a credential's password to a user with the 'view credentials'"
        " permission. Every reveal is written to the access log in the same transaction;"
        " a refusal reveals and logs nothing. Rate-limited per user and per client address."
        " Needs a connection to"
        " the server: devices never hold passwords.",
        graphql_type=RevealResult,
    )
    async def reveal_credential_password(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="The credential's global `id` or its uuid (`recordId`)."
            ),
        ],
        device_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="The device asking, recorded in the access log."),
        ] = None,
    ) -> RevealedPassword | UserError:
        """Decrypt and log."""
        await info.context.user()
        try:
            credential_id = decode_id(id, "Credential")
        except InvalidIdError as exc:
            return bad_id(id, exc)
        device = None
        if device_id is not None:
            try:
                device = decode_id(device_id, "Device")
            except InvalidIdError as exc:
                return bad_id(device_id, exc)
        ring = key_ring(info)
        settings = info.context.settings
        result = await in_transaction(
            info,
            lambda conn, user: commands.reveal(
                conn,
                org_id=user.org_id,
                user_id=user.id,
                credential_id=credential_id,
                keyring=ring,
                client_address=info.context.client_address,
                device_id=device,
                rate_per_minute=settings.reveal_rate_per_minute,
                address_rate_per_minute=settings.reveal_rate_per_address_per_minute,
            ),
            client_ids={"credential": id, "device": str(device_id)},
        )
        if isinstance(result, commands.Revealed):
            return RevealedPassword(
                credential_id=id,
                password=result.password,
                revealed_at=result.access["revealed_at"],
            )
        return result
