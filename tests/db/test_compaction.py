"""Tombstone compaction and the resync answer for devices behind the horizon."""

from __future__ import annotations

from datetime import timedelta

from db.compaction import compact
from tests.api.queries import make_tree
from tests.api.sync_client import Device


class TestCompaction:
    async def test_tombstones_below_every_live_checkpoint_are_removed(self, db, tenant):
        """Compaction removes tombstones all live devices have seen and keeps the others."""
        ids = await make_tree(tenant.admin)
        device = await Device(tenant.admin).register()
        await device.sync()
        await tenant.admin(
            "mutation($id: ID!) { deleteAsset(id: $id) { __typename } }", {"id": ids["asset"]}
        )
        async with db.tenant(tenant.org_id) as conn:
            held_back = await compact(conn, tenant.org_id)
        assert held_back.removed == 0  # the device has not seen the delete yet
        await device.sync()
        async with db.tenant(tenant.org_id) as conn:
            result = await compact(conn, tenant.org_id)
        assert result.removed == 1

    async def test_device_behind_the_horizon_gets_a_reset(self, db, tenant):
        """A device whose checkpoint is older than the horizon gets the feed's first page
        again, marked reset: dropping what it holds and applying it restores exactly the
        live data."""
        ids = await make_tree(tenant.admin)
        old = await Device(tenant.admin).register()
        await old.sync()
        stale_checkpoint = old.checkpoint
        await tenant.admin(
            "mutation($id: ID!) { deleteAsset(id: $id) { __typename } }", {"id": ids["asset"]}
        )
        async with db.tenant(tenant.org_id) as conn:
            # The old device does not hold compaction back once it is considered gone.
            await compact(conn, tenant.org_id, device_ttl=timedelta(seconds=0))
        old.checkpoint = stale_checkpoint
        page = await old.pull_page()
        assert page["reset"] is True
        assert len(page["changes"]) == 3
        assert len(old.store) == 3
        page = await old.pull_page()
        assert page["reset"] is False
