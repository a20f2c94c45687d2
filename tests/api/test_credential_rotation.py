"""Master-key rotation: every data key re-wrapped, online, resumable; old keys retire."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from sqlalchemy import func, select

from db.commands.credentials import RotationError, pending_rotation, rotate_keys
from db.crypto import KeyRing
from db.engine import create_engine, set_tenant, to_async_url
from db.tables import change_log, credentials
from server.settings import Settings
from tests.api.credential_queries import api_with, make_credential, reveal
from tests.api.queries import make_customer
from tests.conftest import ACTIVE_KEY_ID, MASTER_KEYS, SECRET, TEST_KEYS

BOTH = KeyRing.parse(MASTER_KEYS, ACTIVE_KEY_ID)


@pytest.fixture(scope="module")
async def owner(database_url):
    """An engine as the database owner (rotation reads every tenant)."""
    engine = create_engine(to_async_url(database_url), pool_size=2)
    yield engine
    await engine.dispose()


def only(key_id: str | None = None) -> Settings:
    """Server settings whose key ring holds nothing but ``key_id`` (default: both keys),
    without a practical reveal rate limit (these tests reveal a lot)."""
    keys = f"{key_id}:{TEST_KEYS[key_id]}" if key_id else MASTER_KEYS
    return Settings(
        secret_key=SECRET,
        master_keys=keys,
        active_key_id=None if key_id else ACTIVE_KEY_ID,
        reveal_rate_per_minute=1000,
    )


async def seed(tenant, count: int = 5) -> dict[str, str | None]:
    """Credentials of one customer: {global id: password}, one of them without a password."""
    customer = await make_customer(tenant.admin)
    passwords: dict[str, str | None] = {}
    for n in range(count):
        password = None if n == 0 else f"rotate-me-{n}-{'x' * n}"
        cred = await make_credential(
            tenant.admin, {"customerId": customer["id"]}, name=f"c{n}", password=password
        )
        passwords[cred["id"]] = password
    return passwords


async def snapshot(owner, org_id) -> tuple[dict, int]:
    """Key id and version of each credential of a tenant, and its change-log length."""
    async with owner.begin() as conn:
        await set_tenant(conn, org_id)
        rows = (
            await conn.execute(
                select(credentials.c.id, credentials.c.key_id, credentials.c.version).where(
                    credentials.c.org_id == org_id
                )
            )
        ).all()
        log = (
            await conn.execute(select(func.count()).where(change_log.c.org_id == org_id))
        ).scalar_one()
    return {r.id: (r.key_id, r.version) for r in rows}, log


async def reveals_all(api, passwords) -> None:
    """Every credential reveals its password (NoPassword where there is none)."""
    for global_id, password in passwords.items():
        result = await reveal(api, global_id)
        if password is None:
            assert result["__typename"] == "NoPassword", result
        else:
            assert result.get("password") == password, result


class TestRotation:
    async def test_after_rotation_only_the_new_key_is_needed(self, tenant, owner, db):
        """Every data key moves to the new master key; a server holding only that key
        reveals the same passwords, and one holding only the old key no longer can."""
        passwords = await seed(tenant)
        before, log_before = await snapshot(owner, tenant.org_id)
        assert {k for k, _ in before.values()} == {"test-a", None}
        done: list[int] = []
        report = await rotate_keys(owner, BOTH, "test-b", batch_size=2, progress=done.append)
        assert report.failed == []
        assert report.usage["test-a"] == 0
        assert report.retired_key_ids == ["test-a"]
        assert sum(done) == report.rotated >= 4
        after, log_after = await snapshot(owner, tenant.org_id)
        assert {k for k, _ in after.values()} == {"test-b", None}
        # Rotation changes no synced data: same versions, no change-log rows.
        assert {i: v for i, (_, v) in after.items()} == {i: v for i, (_, v) in before.items()}
        assert log_after == log_before
        async with api_with(only("test-b"), db, tenant.admin.token) as api:
            await reveals_all(api, passwords)
        async with api_with(only("test-a"), db, tenant.admin.token) as api:
            some = next(i for i, p in passwords.items() if p)
            assert (await reveal(api, some))["__typename"] == "DecryptionFailed"

    async def test_an_interrupted_rotation_continues_where_it_stopped(self, tenant, owner, db):
        """A run that dies after one batch leaves that batch done; the next run finishes."""
        passwords = await seed(tenant, count=7)
        await rotate_keys(owner, BOTH, "test-a")  # everything starts on test-a

        class CrashError(Exception):
            pass

        def crash_after_first_batch(n: int) -> None:
            raise CrashError

        with pytest.raises(CrashError):
            await rotate_keys(
                owner,
                BOTH,
                "test-b",
                batch_size=3,
                progress=crash_after_first_batch,
                org_ids=[tenant.org_id],
            )
        middle, _ = await snapshot(owner, tenant.org_id)
        assert {k for k, _ in middle.values()} == {"test-a", "test-b", None}
        # Meanwhile the server serves with both keys in its ring.
        async with api_with(only(), db, tenant.admin.token) as api:
            await reveals_all(api, passwords)
        report = await rotate_keys(owner, BOTH, "test-b", batch_size=3)
        assert report.failed == []
        assert await pending_rotation(owner, BOTH, "test-b") == 0
        async with api_with(only("test-b"), db, tenant.admin.token) as api:
            await reveals_all(api, passwords)

    async def test_writes_during_rotation_are_not_lost(self, tenant, owner, db):
        """Password changes racing a rotation end with the new password, on some known key."""
        passwords = await seed(tenant, count=6)
        await rotate_keys(owner, BOTH, "test-a")
        ids = [i for i, p in passwords.items() if p]

        async def edit() -> None:
            for n, global_id in enumerate(ids):
                await tenant.admin(
                    """mutation($id: ID!, $p: String) {
                         updateCredential(id: $id, input: { password: $p }) { __typename } }""",
                    {"id": global_id, "p": f"changed-{n}"},
                )
                passwords[global_id] = f"changed-{n}"

        await asyncio.gather(
            edit(), rotate_keys(owner, BOTH, "test-b", batch_size=1, org_ids=[tenant.org_id])
        )
        async with api_with(only(), db, tenant.admin.token) as api:
            await reveals_all(api, passwords)

    async def test_a_key_still_in_use_must_be_in_the_ring(self, tenant, owner):
        """Rotation refuses to start when the ring lacks the target or a key still in use."""
        await seed(tenant, count=2)
        await rotate_keys(owner, BOTH, "test-a")
        only_b = KeyRing.parse(f"test-b:{TEST_KEYS['test-b']}")
        with pytest.raises(RotationError, match="'test-a'"):
            await rotate_keys(owner, only_b, "test-b")
        with pytest.raises(RotationError, match="'nope' is not in FIELDSYNC_MASTER_KEYS"):
            await rotate_keys(owner, BOTH, "nope")


def run_cli(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run `fieldsync ARGS`; (exit code, stderr)."""
    process = await run_cli(*args, env=env)
    _, err = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode is not None
    return process.returncode, err.decode()


class TestRotateKeysCommand:
    async def test_cli_rotates_with_a_progress_bar_and_names_retired_keys(
        self, tenant, owner, db, database_url, tmp_path
    ):
        """`fieldsync rotate-keys --to KEY` re-wraps everything and says the old key can go."""
        passwords = await seed(tenant)
        await rotate_keys(owner, BOTH, "test-b")
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "FIELDSYNC_DATA_DIR": str(tmp_path),
            "FIELDSYNC_MASTER_KEYS": MASTER_KEYS,
            "FIELDSYNC_ACTIVE_KEY_ID": "test-a",
        }
        code, err = await cli("rotate-keys", "--to", "test-a", "--batch-size", "2", env=env)
        assert code == 0, err
        assert "re-wrapping with test-a" in err
        assert "Re-wrapped" in err
        assert "'test-b'" in err
        assert "remove it from FIELDSYNC_MASTER_KEYS" in err
        assert await pending_rotation(owner, BOTH, "test-a") == 0
        async with api_with(only("test-a"), db, tenant.admin.token) as api:
            await reveals_all(api, passwords)

    async def test_cli_refuses_without_the_keys_it_needs(
        self, tenant, owner, database_url, tmp_path
    ):
        """Missing key ring, unknown target or a key still in use: exit 2 with a message."""
        await seed(tenant, count=2)
        await rotate_keys(owner, BOTH, "test-a")
        base = {**os.environ, "DATABASE_URL": database_url, "FIELDSYNC_DATA_DIR": str(tmp_path)}
        base.pop("FIELDSYNC_MASTER_KEYS", None)
        base.pop("FIELDSYNC_ACTIVE_KEY_ID", None)
        code, err = await cli("rotate-keys", "--to", "test-b", env=base)
        assert code == 2
        assert "FIELDSYNC_MASTER_KEYS is not set" in err
        code, err = await cli(
            "rotate-keys", "--to", "nope", env={**base, "FIELDSYNC_MASTER_KEYS": MASTER_KEYS}
        )
        assert code == 2
        assert "'nope' is not in FIELDSYNC_MASTER_KEYS" in err
        only_b = f"test-b:{TEST_KEYS['test-b']}"
        code, err = await cli(
            "rotate-keys", "--to", "test-b", env={**base, "FIELDSYNC_MASTER_KEYS": only_b}
        )
        assert code == 2
        assert "'test-a'" in err
