"""Masked credentials: create, update, delete (through the one write path), reveal with an
access-log row in the same transaction, and master-key rotation.

Who may do what (admins may always; portal users never write):

- list and read: admins and technicians every credential, portal users the public ones of
  their own customer (``db.queries.credentials.Visibility``);
- create, update, delete: ``can_create_credentials``, ``can_edit_credentials``,
  ``can_delete_credentials``;
- reveal: ``can_view_credentials``, on a credential the user can see.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from db.commands.records import SERVER_REPLICA
from db.crypto import (
    DecryptError,
    EncryptedSecret,
    KeyRing,
    UnknownKeyError,
    decrypt_password,
    encrypt_password,
    no_secret_columns,
    rewrap,
)
from db.engine import set_tenant
from db.entities import CONTACT, CREDENTIAL, CUSTOMER
from db.errors import (
    DecryptionFailedError,
    ForbiddenError,
    NoPasswordError,
    NotFoundError,
    RateLimitedError,
    RecordValidationError,
)
from db.queries import credentials as queries
from db.queries import rate_limits, records
from db.write_path import RecordWrite, Row, lock_rows, write_records
from sync.validation import validate_record

log = structlog.get_logger("fieldsync.credentials")

MAX_PASSWORD_LENGTH = 1_024
RATE_WINDOW_SECONDS = 60
REVEAL_BY_ADDRESS = "reveal_address"
PUBLIC_FIELDS = ("name", "username", "url", "notes", "is_public")

ADMIN = "ADMIN"
PORTAL = "PORTAL"
VIEW = "can_view_credentials"
CREATE = "can_create_credentials"
EDIT = "can_edit_credentials"
DELETE = "can_delete_credentials"


def may(role: str, capabilities: frozenset[str], capability: str) -> bool:
    """Whether a user of ``role`` with ``capabilities`` may use ``capability``.

    Admins always may; portal users may only view, and only with the capability.
    """
    if role == ADMIN:
        return True
    if role == PORTAL and capability != VIEW:
        return False
    return capability in capabilities


def _validate(values: Mapping[str, Any], password: str | None, max_length: int) -> None:
    errors = validate_record("credential", values, [], max_length=max_length)
    if password is not None and len(password) > MAX_PASSWORD_LENGTH:
        errors["password"] = (
            f"is too long ({len(password)} characters, at most {MAX_PASSWORD_LENGTH})"
        )
    if errors:
        raise RecordValidationError(errors)


def _secret_patch(
    keyring: KeyRing | None, org_id: UUID, credential_id: UUID, password: str | None
) -> dict[str, Any]:
    """The columns that store ``password`` (a fresh data key and nonces), or none."""
    if password is None:
        return {**no_secret_columns(), "has_password": False}
    assert keyring is not None, "the caller checks that a key ring is configured"
    secret = encrypt_password(
        keyring, org_id=org_id, credential_id=credential_id, password=password
    )
    return {**secret.columns(), "has_password": True}


async def _parents(
    conn: AsyncConnection, org_id: UUID, customer_id: UUID | None, contact_id: UUID | None
) -> dict[str, UUID]:
    """The customer (and contact) a new credential hangs off; a contact's gives the customer."""
    if contact_id is not None:
        found = await records.by_ids(conn, CONTACT, org_id, [contact_id])
        if not found:
            raise NotFoundError("contact", contact_id)
        owner = found[0]["customer_id"]
        if customer_id is not None and customer_id != owner:
            raise RecordValidationError({"contactId": "belongs to another customer"})
        return {"customer_id": owner, "contact_id": contact_id}
    if customer_id is None:
        raise RecordValidationError({"customerId": "give the customer or the contact"})
    if not await records.by_ids(conn, CUSTOMER, org_id, [customer_id]):
        raise NotFoundError("customer", customer_id)
    return {"customer_id": customer_id}


async def create(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    customer_id: UUID | None,
    contact_id: UUID | None,
    values: Mapping[str, Any],
    password: str | None,
    keyring: KeyRing | None,
    replica: str = SERVER_REPLICA,
    max_length: int = 10_000,
) -> Row:
    """A new credential of a customer or a contact; the password is encrypted at once."""
    links = await _parents(conn, org_id, customer_id, contact_id)
    merged = {**CREDENTIAL.new_row_defaults(), **values}
    _validate({f: merged[f] for f in PUBLIC_FIELDS}, password, max_length)
    record_id = uuid4()
    patch = {**values, **_secret_patch(keyring, org_id, record_id, password)}
    [row] = await write_records(
        conn,
        org_id=org_id,
        spec=CREDENTIAL,
        writes=[RecordWrite(record_id=record_id, patch=patch, links=links)],
        replica=replica,
        current={},
    )
    return row


async def update(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    credential_id: UUID,
    values: Mapping[str, Any],
    change_password: bool,
    password: str | None,
    keyring: KeyRing | None,
    replica: str = SERVER_REPLICA,
    max_length: int = 10_000,
) -> Row:
    """Change fields; with ``change_password`` set (None removes) the password, encrypted
    under a fresh data key and nonce."""
    current = (await lock_rows(conn, CREDENTIAL, org_id, [credential_id])).get(credential_id)
    if current is None or current["deleted"]:
        raise NotFoundError("credential", credential_id)
    merged = {**{f: current[f] for f in PUBLIC_FIELDS}, **values}
    _validate(merged, password if change_password else None, max_length)
    patch = dict(values)
    if change_password:
        patch.update(_secret_patch(keyring, org_id, credential_id, password))
    [row] = await write_records(
        conn,
        org_id=org_id,
        spec=CREDENTIAL,
        writes=[RecordWrite(record_id=credential_id, patch=patch)],
        replica=replica,
        current={credential_id: current},
    )
    return row


async def delete(
    conn: AsyncConnection, *, org_id: UUID, credential_id: UUID, replica: str = SERVER_REPLICA
) -> Row:
    """Tombstone a credential; its encrypted password is erased with it."""
    current = (await lock_rows(conn, CREDENTIAL, org_id, [credential_id])).get(credential_id)
    if current is None or current["deleted"]:
        raise NotFoundError("credential", credential_id)
    write = RecordWrite(
        record_id=credential_id,
        delete=True,
        patch={**no_secret_columns(), "has_password": False},
    )
    [row] = await write_records(
        conn,
        org_id=org_id,
        spec=CREDENTIAL,
        writes=[write],
        replica=replica,
        current={credential_id: current},
    )
    return row


@dataclass(frozen=True)
class Revealed:
    """A revealed password and the access-log row that records it."""

    password: str = field(repr=False)
    access: Row


async def reveal(
    conn: AsyncConnection,
    *,
    org_id: UUID,
    user_id: UUID,
    credential_id: UUID,
    keyring: KeyRing,
    client_address: str | None,
    device_id: UUID | None = None,
    rate_per_minute: int = 10,
    address_rate_per_minute: int = 60,
) -> Revealed:
    """Decrypt one password for a permitted user and log it in the caller's transaction.

    The log row and the answer stand or fall together: every refusal raises before the
    insert, and a failed commit discards the password with the row.
    """
    user = await queries.lock_user(conn, org_id, user_id)
    if user is None or not user["active"]:
        raise ForbiddenError("this account is not active")
    capabilities = frozenset(k for k, v in user.items() if k.startswith("can_") and v)
    if not may(user["role"], capabilities, VIEW):
        raise ForbiddenError(
            "you may not reveal credential passwords: an admin can grant 'view credentials'"
        )
    row = await queries.secret_row(conn, org_id, credential_id)
    seen = queries.Visibility.of(user["role"], user["customer_id"])
    if row is None or row["deleted"] or not seen.allows(row):
        raise NotFoundError("credential", credential_id)
    secret = EncryptedSecret.from_row(row)
    if secret is None:
        raise NoPasswordError(credential_id)
    count, oldest, now = await queries.recent_reveals(conn, org_id, user_id, RATE_WINDOW_SECONDS)
    if count >= rate_per_minute:
        wait = RATE_WINDOW_SECONDS - (now - oldest).total_seconds() if oldest else 1
        raise RateLimitedError(rate_per_minute, max(1, int(wait) + 1))
    if client_address is not None:
        # Per address too: one client behind many accounts. Counted in this transaction, so
        # a later refusal (or a failed commit) uncounts it with the access-log row. Per
        # tenant as well: one tenant's reveals (or a stranger's, from a shared office or
        # carrier NAT) never use up another tenant's window.
        taken = await rate_limits.take(
            conn,
            REVEAL_BY_ADDRESS,
            f"{org_id}:{client_address}",
            limit=address_rate_per_minute,
            window_seconds=RATE_WINDOW_SECONDS,
        )
        if isinstance(taken, rate_limits.Refused):
            raise RateLimitedError(
                taken.limit, taken.retry_after_seconds, "password reveals per address per minute"
            )
    if device_id is not None and not await queries.is_users_device(
        conn, org_id, user_id, device_id
    ):
        raise NotFoundError("device", device_id)
    password = _decrypt(keyring, org_id, credential_id, secret)
    access = await queries.insert_access(
        conn,
        org_id=org_id,
        credential_id=credential_id,
        customer_id=row["customer_id"],
        user_id=user_id,
        device_id=device_id,
        client_address=client_address,
    )
    return Revealed(password=password, access=access)


def _decrypt(keyring: KeyRing, org_id: UUID, credential_id: UUID, secret: EncryptedSecret) -> str:
    try:
        return decrypt_password(keyring, org_id=org_id, credential_id=credential_id, secret=secret)
    except UnknownKeyError as exc:
        log.error(
            "credential master key missing", credential_id=str(credential_id), key_id=exc.key_id
        )
        raise DecryptionFailedError(
            f"this password is wrapped by master key {exc.key_id!r}, which this server does"
            " not have: an administrator must add it to FIELDSYNC_MASTER_KEYS"
        ) from None
    except DecryptError as exc:
        log.error("credential does not decrypt", credential_id=str(credential_id), reason=str(exc))
        raise DecryptionFailedError(
            "this password cannot be decrypted: its stored data was altered, or the master"
            f" key {secret.key_id!r} configured on this server is not the one it was"
            " encrypted with. Nothing was revealed."
        ) from None


class RotationError(Exception):
    """Rotation cannot start (a key it needs is missing from the ring)."""


@dataclass
class RotationReport:
    """What a rotation run did."""

    to_key_id: str
    rotated: int = 0
    # (tenant, credential, reason) of rows that could not be re-wrapped; left unchanged.
    failed: list[tuple[UUID, UUID, str]] = field(default_factory=list)
    # Credentials per master key id after the run, over every tenant.
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def retired_key_ids(self) -> list[str]:
        """Keys no credential uses any more."""
        return [k for k, n in self.usage.items() if n == 0 and k != self.to_key_id]


async def key_usage(engine: AsyncEngine) -> dict[tuple[UUID, str], int]:
    """(tenant, master key id) -> credentials with a password, over every tenant."""
    async with engine.connect() as conn:
        return {(u.org_id, u.key_id): u.credentials for u in await queries.key_usage(conn)}


async def pending_rotation(engine: AsyncEngine, keyring: KeyRing, to_key_id: str) -> int:
    """How many credentials are wrapped by another key than ``to_key_id``; checks that the
    ring has the target and every key still in use (raises RotationError otherwise)."""
    if to_key_id not in keyring.keys:
        raise RotationError(
            f"master key {to_key_id!r} is not in FIELDSYNC_MASTER_KEYS"
            f" (ids: {', '.join(keyring.ids)})"
        )
    usage = await key_usage(engine)
    missing = sorted({key for (_, key) in usage if key not in keyring.keys})
    if missing:
        raise RotationError(
            "credentials are still wrapped by master key(s) "
            + ", ".join(repr(k) for k in missing)
            + ", which FIELDSYNC_MASTER_KEYS lacks: add them (old and new keys) and run again"
        )
    return sum(n for (_, key), n in usage.items() if key != to_key_id)


async def rotate_keys(
    engine: AsyncEngine,
    keyring: KeyRing,
    to_key_id: str,
    *,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
    org_ids: Collection[UUID] | None = None,
) -> RotationReport:
    """Re-wrap every data key not yet under master key ``to_key_id``.

    Runs on the owner's engine because it reads every tenant. Each batch is its own short
    transaction scoped to one tenant, with its rows locked, so the server keeps serving
    and a crashed run continues where it stopped when started again (it only picks rows
    still on another key). Rows that fail to decrypt are reported and left unchanged.
    ``org_ids`` limits the run to some tenants (default: all).
    """
    await pending_rotation(engine, keyring, to_key_id)
    report = RotationReport(to_key_id=to_key_id)
    orgs = sorted(
        {
            org
            for (org, key) in await key_usage(engine)
            if key != to_key_id and (org_ids is None or org in org_ids)
        }
    )
    for org_id in orgs:
        after: UUID | None = None
        while True:
            async with engine.begin() as conn:
                await set_tenant(conn, org_id)
                rows = await queries.secrets_batch(
                    conn, org_id, not_key_id=to_key_id, after=after, limit=batch_size
                )
                if not rows:
                    break
                updates: list[Row] = []
                for row in rows:
                    secret = EncryptedSecret.from_row(row)
                    assert secret is not None
                    try:
                        moved = rewrap(
                            keyring,
                            org_id=org_id,
                            credential_id=row["id"],
                            secret=secret,
                            to_key_id=to_key_id,
                        )
                    except (DecryptError, UnknownKeyError) as exc:
                        report.failed.append((org_id, row["id"], str(exc)))
                        continue
                    updates.append({"id": row["id"], **moved.columns()})
                await queries.set_wrapping(conn, org_id, updates)
            report.rotated += len(updates)
            after = rows[-1]["id"]
            if progress is not None:
                progress(len(rows))
    totals: dict[str, int] = dict.fromkeys(keyring.ids, 0)
    for (_, key), n in (await key_usage(engine)).items():
        totals[key] = totals.get(key, 0) + n
    report.usage = totals
    return report
