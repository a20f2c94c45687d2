"""Envelope encryption of credential passwords (pure, no database)."""

from __future__ import annotations

import base64
import dataclasses
import os
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from db.crypto import (
    DEMO_KEY_RING,
    KEY_BYTES,
    NONCE_BYTES,
    DecryptError,
    EncryptedSecret,
    KeyRing,
    KeyRingError,
    UnknownKeyError,
    decrypt_password,
    encrypt_password,
    generate_master_key,
    rewrap,
)

ORG = uuid4()
CRED = uuid4()


def ring(*ids: str, active: str | None = None) -> KeyRing:
    return KeyRing(keys={i: os.urandom(KEY_BYTES) for i in ids}, active_id=active or ids[-1])


class TestKeyRing:
    def test_parses_ids_and_keys_and_defaults_to_the_last(self):
        """`id:base64,id:base64` parses; the last key is active unless one is named."""
        a, b = generate_master_key(), generate_master_key()
        parsed = KeyRing.parse(f"old:{a}, new:{b}")
        assert parsed.ids == ("old", "new")
        assert parsed.active_id == "new"
        assert parsed.key("old") == base64.b64decode(a)
        assert KeyRing.parse(f"old:{a},new:{b}", "old").active_id == "old"

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("", "holds no key"),
            ("nokey", "must look like"),
            ("k1:not base64!", "not valid base64"),
            (f"k1:{base64.b64encode(b'short').decode()}", "must be 32 bytes"),
            (f"bad id:{generate_master_key()}", "letters, digits"),
            (f"k1:{generate_master_key()},k1:{generate_master_key()}", "appears twice"),
        ],
    )
    def test_malformed_rings_are_refused_clearly(self, spec, message):
        """A malformed key ring raises KeyRingError saying what is wrong."""
        with pytest.raises(KeyRingError, match=message):
            KeyRing.parse(spec)

    def test_active_key_must_be_in_the_ring(self):
        """Naming an active key that the ring lacks is an error."""
        with pytest.raises(KeyRingError, match="not in the key ring"):
            KeyRing.parse(f"k1:{generate_master_key()}", "k2")

    def test_repr_never_shows_keys(self):
        """Neither the ring nor a secret prints key material."""
        keys = ring("k1")
        secret = encrypt_password(keys, org_id=ORG, credential_id=CRED, password="hunter2")
        assert base64.b64encode(keys.key("k1")).decode() not in repr(keys)
        assert repr(keys.key("k1")) not in repr(keys)
        assert "wrapped_key" not in repr(secret)

    def test_demo_ring_parses(self):
        """The built-in demo ring is a valid one-key ring."""
        assert KeyRing.parse(DEMO_KEY_RING).ids == ("demo-not-secret",)


class TestEncrypt:
    def test_round_trip(self):
        """A password decrypts to itself with the same ring, tenant and credential."""
        keys = ring("k1")
        secret = encrypt_password(keys, org_id=ORG, credential_id=CRED, password="gate 4711#")
        assert secret.key_id == "k1"
        assert len(secret.key_nonce) == len(secret.password_nonce) == NONCE_BYTES
        assert b"gate 4711#" not in secret.password_ciphertext
        assert decrypt_password(keys, org_id=ORG, credential_id=CRED, secret=secret) == (
            "gate 4711#"
        )

    @settings(max_examples=50, deadline=None)
    @given(st.text(max_size=1024))
    def test_any_text_round_trips(self, password):
        """Any unicode text up to the limit survives encryption."""
        keys = ring("k1")
        secret = encrypt_password(keys, org_id=ORG, credential_id=CRED, password=password)
        assert decrypt_password(keys, org_id=ORG, credential_id=CRED, secret=secret) == password

    def test_every_encryption_uses_a_fresh_data_key_and_nonces(self):
        """Encrypting the same password twice shares no nonce, wrapped key or ciphertext."""
        keys = ring("k1")
        one = encrypt_password(keys, org_id=ORG, credential_id=CRED, password="same")
        two = encrypt_password(keys, org_id=ORG, credential_id=CRED, password="same")
        assert one.password_nonce != two.password_nonce
        assert one.key_nonce != two.key_nonce
        assert one.wrapped_key != two.wrapped_key
        assert one.password_ciphertext != two.password_ciphertext

    def test_new_secrets_use_the_active_key(self):
        """The active key of the ring wraps new data keys."""
        keys = ring("old", "new", active="old")
        assert encrypt_password(keys, org_id=ORG, credential_id=CRED, password="x").key_id == "old"


class TestAssociatedData:
    @pytest.mark.parametrize("which", ["org", "credential"])
    def test_a_secret_moved_to_another_row_or_tenant_does_not_decrypt(self, which):
        """Decrypting with another tenant or credential id fails authentication."""
        keys = ring("k1")
        secret = encrypt_password(keys, org_id=ORG, credential_id=CRED, password="p")
        org, cred = (uuid4(), CRED) if which == "org" else (ORG, uuid4())
        with pytest.raises(DecryptError):
            decrypt_password(keys, org_id=org, credential_id=cred, secret=secret)

    def test_swapped_ciphertexts_do_not_decrypt(self):
        """A password ciphertext paired with another row's data key fails."""
        keys = ring("k1")
        one = encrypt_password(keys, org_id=ORG, credential_id=CRED, password="one")
        other_id = uuid4()
        two = encrypt_password(keys, org_id=ORG, credential_id=other_id, password="two")
        mixed = dataclasses.replace(
            one, password_nonce=two.password_nonce, password_ciphertext=two.password_ciphertext
        )
        with pytest.raises(DecryptError):
            decrypt_password(keys, org_id=ORG, credential_id=CRED, secret=mixed)

    def test_relabelled_key_id_does_not_decrypt(self):
        """Claiming another master key id (even one holding the same key) fails."""
        key = os.urandom(KEY_BYTES)
        keys = KeyRing(keys={"k1": key, "k2": key}, active_id="k1")
        secret = encrypt_password(keys, org_id=ORG, credential_id=CRED, password="p")
        with pytest.raises(DecryptError):
            decrypt_password(
                keys,
                org_id=ORG,
                credential_id=CRED,
                secret=dataclasses.replace(secret, key_id="k2"),
            )

    def test_flipped_bit_does_not_decrypt(self):
        """Any change to the ciphertext is detected."""
        keys = ring("k1")
        secret = encrypt_password(keys, org_id=ORG, credential_id=CRED, password="p")
        flipped = bytes([secret.password_ciphertext[0] ^ 1]) + secret.password_ciphertext[1:]
        with pytest.raises(DecryptError):
            decrypt_password(
                keys,
                org_id=ORG,
                credential_id=CRED,
                secret=dataclasses.replace(secret, password_ciphertext=flipped),
            )


class TestMasterKeys:
    def test_missing_master_key_is_named(self):
        """A secret wrapped by a key the ring lacks raises UnknownKeyError naming it."""
        secret = encrypt_password(ring("gone"), org_id=ORG, credential_id=CRED, password="p")
        with pytest.raises(UnknownKeyError, match="'gone' is not in the key ring"):
            decrypt_password(ring("k1"), org_id=ORG, credential_id=CRED, secret=secret)

    def test_wrong_master_key_under_the_same_id_fails(self):
        """A different key configured under the same id fails authentication."""
        secret = encrypt_password(ring("k1"), org_id=ORG, credential_id=CRED, password="p")
        with pytest.raises(DecryptError, match="master key 'k1'"):
            decrypt_password(ring("k1"), org_id=ORG, credential_id=CRED, secret=secret)

    def test_unknown_algorithm_version_fails(self):
        """A secret claiming an unknown algorithm version is refused."""
        keys = ring("k1")
        secret = encrypt_password(keys, org_id=ORG, credential_id=CRED, password="p")
        with pytest.raises(DecryptError, match="algorithm version"):
            decrypt_password(
                keys,
                org_id=ORG,
                credential_id=CRED,
                secret=dataclasses.replace(secret, alg_version=99),
            )


class TestRewrap:
    def test_rewrapped_secret_needs_only_the_new_key(self):
        """After re-wrapping, a ring holding only the new key decrypts the same password."""
        both = ring("old", "new", active="old")
        secret = encrypt_password(both, org_id=ORG, credential_id=CRED, password="s3cret")
        moved = rewrap(both, org_id=ORG, credential_id=CRED, secret=secret, to_key_id="new")
        assert moved.key_id == "new"
        assert moved.password_nonce != secret.password_nonce
        only_new = KeyRing(keys={"new": both.key("new")}, active_id="new")
        assert decrypt_password(only_new, org_id=ORG, credential_id=CRED, secret=moved) == "s3cret"
        with pytest.raises(UnknownKeyError):
            decrypt_password(only_new, org_id=ORG, credential_id=CRED, secret=secret)

    def test_rewrap_to_the_current_key_changes_nothing(self):
        """A secret already under the target key is returned as is."""
        keys = ring("k1")
        secret = encrypt_password(keys, org_id=ORG, credential_id=CRED, password="p")
        assert rewrap(keys, org_id=ORG, credential_id=CRED, secret=secret, to_key_id="k1") is (
            secret
        )

    def test_rewrap_to_an_unknown_key_fails(self):
        """The target key must be in the ring."""
        keys = ring("k1")
        secret = encrypt_password(keys, org_id=ORG, credential_id=CRED, password="p")
        with pytest.raises(UnknownKeyError):
            rewrap(keys, org_id=ORG, credential_id=CRED, secret=secret, to_key_id="k9")

    def test_columns_round_trip_through_a_row(self):
        """A secret stored as columns reads back equal; a row without ciphertext has none."""
        keys = ring("k1")
        secret = encrypt_password(keys, org_id=ORG, credential_id=CRED, password="p")
        assert EncryptedSecret.from_row(secret.columns()) == secret
        assert EncryptedSecret.from_row({"password_ciphertext": None}) is None
