"""Envelope encryption of credential passwords.

Two levels of keys:

- **Master keys** come from settings as a key ring (``id -> 32-byte key``); one of them is
  active and wraps new data keys. They are never stored in the database.
- **Data keys**: every stored password gets a fresh random 256-bit key. The password is
  encrypted with it (AES-256-GCM, random 96-bit nonce) and the data key is stored *wrapped*
  (encrypted) by a master key (AES-256-GCM too), next to the id of that master key.

Associated data binds each ciphertext to where it belongs, so a ciphertext copied to another
row, tenant, field or key id fails to decrypt instead of revealing a secret:

- the wrapped data key: tenant, credential id, master key id, algorithm version;
- the password: tenant, credential id, field name (``password``), master key id, version.

Rotation (:func:`rewrap`) unwraps the data key with the old master key and wraps it with the
new one; because the password's associated data names the key id, the password is also
re-encrypted under the same data key with a fresh nonce. Plaintext exists only in memory.

Pure functions, no I/O; ``cryptography``'s AESGCM does the work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ALG_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
PASSWORD_FIELD = "password"  # noqa: S105 - the field name bound into associated data
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# Columns of a credential row that hold the encrypted secret (all NULL without a password).
SECRET_COLUMNS = (
    "key_id",
    "wrapped_key",
    "key_nonce",
    "password_nonce",
    "password_ciphertext",
    "alg_version",
)

# `fieldsync serve --demo` without configured keys uses this key. It is derived from a
# public string, so it protects nothing: demo data only.
DEMO_KEY_ID = "demo-not-secret"
DEMO_MASTER_KEY = hashlib.sha256(b"fieldsync demo master key: NOT SECRET").digest()
DEMO_KEY_RING = f"{DEMO_KEY_ID}:{base64.b64encode(DEMO_MASTER_KEY).decode()}"


class CryptoError(Exception):
    """Base of every failure of this module."""


class KeyRingError(CryptoError, ValueError):
    """The configured key ring is malformed (format, key length, unknown active id)."""


class UnknownKeyError(CryptoError):
    """A secret names a master key id that is not in the key ring."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"master key {key_id!r} is not in the key ring (FIELDSYNC_MASTER_KEYS):"
            " add it back to decrypt credentials wrapped with it"
        )
        self.key_id = key_id


class DecryptError(CryptoError):
    """Authentication failed: a wrong master key, or the stored data was altered or moved."""


@dataclass(frozen=True)
class KeyRing:
    """Master keys by id; ``active_id`` wraps new data keys. Keys never show in ``repr``."""

    keys: Mapping[str, bytes] = field(repr=False)
    active_id: str

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyRingError("the key ring is empty")
        for key_id, key in self.keys.items():
            if not KEY_ID_PATTERN.match(key_id):
                raise KeyRingError(
                    f"master key id {key_id!r} must be 1-64 letters, digits, '_', '-' or '.'"
                )
            if len(key) != KEY_BYTES:
                raise KeyRingError(
                    f"master key {key_id!r} is {len(key)} bytes; it must be {KEY_BYTES} bytes"
                    " (base64 of 32 random bytes)"
                )
        if self.active_id not in self.keys:
            raise KeyRingError(
                f"active master key {self.active_id!r} is not in the key ring"
                f" (ids: {', '.join(self.keys)})"
            )

    @classmethod
    def parse(cls, spec: str, active_id: str | None = None) -> KeyRing:
        """From ``id1:base64key,id2:base64key``; the active key defaults to the last one."""
        keys: dict[str, bytes] = {}
        for raw in spec.split(","):
            entry = raw.strip()
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep or not key_id:
                raise KeyRingError(
                    "FIELDSYNC_MASTER_KEYS must look like `id1:base64key,id2:base64key`"
                )
            if key_id in keys:
                raise KeyRingError(f"master key id {key_id!r} appears twice")
            try:
                keys[key_id] = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise KeyRingError(f"master key {key_id!r} is not valid base64") from exc
        if not keys:
            raise KeyRingError("FIELDSYNC_MASTER_KEYS holds no key")
        return cls(keys=keys, active_id=active_id or list(keys)[-1])

    @property
    def ids(self) -> tuple[str, ...]:
        """The ids in the ring, in configuration order."""
        return tuple(self.keys)

    def key(self, key_id: str) -> bytes:
        """The master key with this id; raises UnknownKeyError."""
        try:
            return self.keys[key_id]
        except KeyError:
            raise UnknownKeyError(key_id) from None


@dataclass(frozen=True)
class EncryptedSecret:
    """What a credential row stores for its password."""

    key_id: str
    wrapped_key: bytes = field(repr=False)
    key_nonce: bytes = field(repr=False)
    password_nonce: bytes = field(repr=False)
    password_ciphertext: bytes = field(repr=False)
    alg_version: int = ALG_VERSION

    def columns(self) -> dict[str, Any]:
        """Column -> value, as the ``credentials`` table stores them."""
        return {name: getattr(self, name) for name in SECRET_COLUMNS}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EncryptedSecret | None:
        """From a credential row; None when it has no password."""
        if row.get("password_ciphertext") is None:
            return None
        return cls(
            key_id=row["key_id"],
            wrapped_key=bytes(row["wrapped_key"]),
            key_nonce=bytes(row["key_nonce"]),
            password_nonce=bytes(row["password_nonce"]),
            password_ciphertext=bytes(row["password_ciphertext"]),
            alg_version=int(row["alg_version"]),
        )


def no_secret_columns() -> dict[str, Any]:
    """The secret columns of a credential without a password."""
    return dict.fromkeys(SECRET_COLUMNS)


def generate_master_key() -> str:
    """A new master key, base64 (what FIELDSYNC_MASTER_KEYS expects after ``id:``)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def _data_key_aad(org_id: UUID, credential_id: UUID, key_id: str, alg_version: int) -> bytes:
    return f"fieldsync/v{alg_version}/data-key/{org_id}/{credential_id}/{key_id}".encode()


def _field_aad(
    org_id: UUID, credential_id: UUID, field_name: str, key_id: str, alg_version: int
) -> bytes:
    return f"fieldsync/v{alg_version}/field/{org_id}/{credential_id}/{field_name}/{key_id}".encode()


def _wrap(
    keyring: KeyRing, key_id: str, data_key: bytes, org_id: UUID, credential_id: UUID
) -> tuple[bytes, bytes]:
    nonce = os.urandom(NONCE_BYTES)
    aad = _data_key_aad(org_id, credential_id, key_id, ALG_VERSION)
    return nonce, AESGCM(keyring.key(key_id)).encrypt(nonce, data_key, aad)


def _seal(data_key: bytes, plaintext: str, aad: bytes) -> tuple[bytes, bytes]:
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(data_key).encrypt(nonce, plaintext.encode("utf-8"), aad)


def encrypt_password(
    keyring: KeyRing, *, org_id: UUID, credential_id: UUID, password: str
) -> EncryptedSecret:
    """Encrypt ``password`` under a fresh data key wrapped by the ring's active master key."""
    key_id = keyring.active_id
    data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    key_nonce, wrapped = _wrap(keyring, key_id, data_key, org_id, credential_id)
    aad = _field_aad(org_id, credential_id, PASSWORD_FIELD, key_id, ALG_VERSION)
    nonce, ciphertext = _seal(data_key, password, aad)
    return EncryptedSecret(
        key_id=key_id,
        wrapped_key=wrapped,
        key_nonce=key_nonce,
        password_nonce=nonce,
        password_ciphertext=ciphertext,
    )


def _unwrap(keyring: KeyRing, secret: EncryptedSecret, org_id: UUID, credential_id: UUID) -> bytes:
    if secret.alg_version != ALG_VERSION:
        raise DecryptError(f"unknown algorithm version {secret.alg_version}")
    master = keyring.key(secret.key_id)
    aad = _data_key_aad(org_id, credential_id, secret.key_id, secret.alg_version)
    try:
        return AESGCM(master).decrypt(secret.key_nonce, secret.wrapped_key, aad)
    except (InvalidTag, ValueError) as exc:
        raise DecryptError(
            f"the data key does not unwrap with master key {secret.key_id!r}: the key is wrong"
            " or the stored data was altered"
        ) from exc


def decrypt_password(
    keyring: KeyRing, *, org_id: UUID, credential_id: UUID, secret: EncryptedSecret
) -> str:
    """The password; raises UnknownKeyError or DecryptError, never returns garbage."""
    data_key = _unwrap(keyring, secret, org_id, credential_id)
    return _open(data_key, secret, org_id, credential_id)


def _open(data_key: bytes, secret: EncryptedSecret, org_id: UUID, credential_id: UUID) -> str:
    aad = _field_aad(org_id, credential_id, PASSWORD_FIELD, secret.key_id, secret.alg_version)
    try:
        plaintext = AESGCM(data_key).decrypt(secret.password_nonce, secret.password_ciphertext, aad)
        return plaintext.decode("utf-8")
    except (InvalidTag, ValueError) as exc:
        raise DecryptError(
            "the password does not decrypt: the stored data was altered or moved"
        ) from exc


def rewrap(
    keyring: KeyRing,
    *,
    org_id: UUID,
    credential_id: UUID,
    secret: EncryptedSecret,
    to_key_id: str,
) -> EncryptedSecret:
    """The same secret with its data key wrapped by master key ``to_key_id``.

    The data key stays; the password is re-encrypted with it under a fresh nonce (its
    associated data names the key id). Plaintext never leaves this function's memory.
    """
    if secret.key_id == to_key_id:
        return secret
    keyring.key(to_key_id)
    data_key = _unwrap(keyring, secret, org_id, credential_id)
    password = _open(data_key, secret, org_id, credential_id)
    key_nonce, wrapped = _wrap(keyring, to_key_id, data_key, org_id, credential_id)
    aad = _field_aad(org_id, credential_id, PASSWORD_FIELD, to_key_id, ALG_VERSION)
    nonce, ciphertext = _seal(data_key, password, aad)
    return EncryptedSecret(
        key_id=to_key_id,
        wrapped_key=wrapped,
        key_nonce=key_nonce,
        password_nonce=nonce,
        password_ciphertext=ciphertext,
    )
