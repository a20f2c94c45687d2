"""Pull pages as PostgreSQL builds them (``db/pull.py``): the record's JSON written by the
database and spliced into the response, and the page statement chosen per page (without
backfill parts, planned once per connection, when no customer became visible after the
checkpoint; with them, planned per page, when one did).

Whatever the statement, an initial sync in small pages must deliver every record exactly
once, in the order one big page has them, with the same data; and ``data`` must hold the
values as written, whatever characters they contain.
"""

from __future__ import annotations

from typing import Any

from tests.api.queries import ARCHIVE_CUSTOMER, CREATE_ASSET, REENABLE_CUSTOMER, make_tree
from tests.api.sync_client import Device


def keys(changes: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(c["entity"], c["recordId"], c["op"]) for c in changes]


async def paged(device: Device, limit: int) -> list[dict[str, Any]]:
    """Every change of a first pull in pages of ``limit``."""
    changes: list[dict[str, Any]] = []
    while True:
        page = await device.pull_page(limit)
        assert not page["reset"]
        changes += page["changes"]
        if not page["hasMore"]:
            return changes


class TestInitialSyncPages:
    async def test_small_pages_match_one_page(self, tenant):
        """Nothing to backfill (no customer was re-enabled): pages of 1, 2 and 3, each from
        the statement planned once per connection, deliver what one page does."""
        for name in ("Acme", "Beta", "Gamma"):
            await make_tree(tenant.admin, name)
        one_page = await (await Device(tenant.admin).register()).pull_page(1000)
        assert not one_page["hasMore"]
        assert len(one_page["changes"]) == 12
        for limit in (1, 2, 3):
            changes = await paged(await Device(tenant.admin).register(), limit)
            assert keys(changes) == keys(one_page["changes"]), limit
            assert changes == one_page["changes"], limit

    async def test_a_reenabled_customer_is_backfilled_in_small_pages(self, tenant):
        """A re-enabled customer comes through the backfill parts; a first pull in small
        pages still sends it and the others whole, each record once."""
        kept = await make_tree(tenant.admin, "Kept")
        back = await make_tree(tenant.admin, "Back")
        archived = await tenant.admin(ARCHIVE_CUSTOMER, {"id": back["customer"]})
        assert archived["archiveCustomer"]["archived"] is True
        restored = await tenant.admin(REENABLE_CUSTOMER, {"id": back["customer"]})
        assert restored["reenableCustomer"]["archived"] is False
        one_page = await (await Device(tenant.admin).register()).pull_page(1000)
        assert not one_page["hasMore"]
        ids = {c["recordId"] for c in one_page["changes"]}
        assert len(ids) == len(one_page["changes"]) == 8
        assert {c["op"] for c in one_page["changes"]} == {"UPSERT"}
        assert len({c["customerId"] for c in one_page["changes"]}) == 2, (kept, back)
        for limit in (1, 3):
            changes = await paged(await Device(tenant.admin).register(), limit)
            assert changes == one_page["changes"], limit


class TestRecordJson:
    async def test_data_holds_the_values_as_written(self, tenant):
        """Text with quotes, backslashes, control characters and non-ASCII, a date and
        nulls come back as the same JSON values."""
        tree = await make_tree(tenant.admin, 'Quote " and \\ back')
        awkward = {
            "kind": 'Door "A"\\B',
            "manufacturer": "Zürich Türen ✓ 🚪",
            "model": "line\nbreak\ttab\u0001ctl",
            "serialNumber": "\u2028sep\u2029",
            "installDate": "2019-02-28",
            "location": "",
            "notes": None,
        }
        created = await tenant.admin(
            CREATE_ASSET, {"input": {"facilityId": tree["facility"], **awkward}}
        )
        asset = created["createAsset"]
        assert asset["__typename"] == "Asset", asset
        page = await (await Device(tenant.admin).register()).pull_page(1000)
        [pulled] = [
            c
            for c in page["changes"]
            if c["entity"] == "ASSET" and c["data"]["kind"] == 'Door "A"\\B'
        ]
        data = pulled["data"]
        assert {k: data[k] for k in awkward} == awkward
        assert data["customerId"] == pulled["customerId"]
        assert set(data) == {"customerId", "facilityId", *awkward, "customFields"}
        customer = next(c for c in page["changes"] if c["entity"] == "CUSTOMER")
        assert customer["data"]["businessName"] == 'Quote " and \\ back'
