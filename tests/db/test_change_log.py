"""The write path's change log: seq per tenant, never a late commit below a seen seq."""

from __future__ import annotations

import asyncio
from uuid import uuid4

from sqlalchemy import select

from db.entities import CUSTOMER
from db.tables import change_log, customers
from db.write_path import RecordWrite, write_records
from tests.api.queries import UPDATE_CUSTOMER, make_customer


async def log_rows(db, org_id):
    async with db.tenant(org_id) as conn:
        result = await conn.execute(
            select(change_log).where(change_log.c.org_id == org_id).order_by(change_log.c.seq)
        )
        return [dict(r) for r in result.mappings()]


class TestChangeLog:
    async def test_every_write_appends_one_row(self, db, tenant):
        """Create, update and delete each append a row with the new version and op."""
        c = await make_customer(tenant.admin)
        await tenant.admin(UPDATE_CUSTOMER, {"id": c["id"], "input": {"businessName": "New"}})
        await tenant.admin(
            "mutation($id: ID!) { deleteCustomer(id: $id) { __typename } }", {"id": c["id"]}
        )
        rows = await log_rows(db, tenant.org_id)
        assert [r["seq"] for r in rows] == [1, 2, 3]
        assert [r["op"] for r in rows] == ["UPSERT", "UPSERT", "DELETE"]
        assert [r["version"] for r in rows] == [{"server": 1}, {"server": 2}, {"server": 3}]
        assert {r["entity"] for r in rows} == {"customer"}

    async def test_delete_leaves_a_tombstone_with_dots(self, db, tenant):
        """A deleted record keeps its id and version as a tombstone; field dots name the writer."""
        c = await make_customer(tenant.admin, email="t@x.example")
        await tenant.admin(UPDATE_CUSTOMER, {"id": c["id"], "input": {"email": "u@x.example"}})
        await tenant.admin(
            "mutation($id: ID!) { deleteCustomer(id: $id) { __typename } }", {"id": c["id"]}
        )
        async with db.tenant(tenant.org_id) as conn:
            row = (
                await conn.execute(select(customers).where(customers.c.org_id == tenant.org_id))
            ).one()
        assert row.deleted is True
        assert row.version == {"server": 3}
        assert row.field_dots["email"] == ["server", 2]
        assert row.field_dots["business_name"] == ["server", 1]

    async def test_seqs_are_per_tenant(self, db, tenant, other_tenant):
        """Each tenant's seqs start at 1 and are gapless for its own writes."""
        await make_customer(tenant.admin)
        await make_customer(other_tenant.admin)
        await make_customer(tenant.admin, businessName="Second")
        assert [r["seq"] for r in await log_rows(db, tenant.org_id)] == [1, 2]
        assert [r["seq"] for r in await log_rows(db, other_tenant.org_id)] == [1]

    async def test_overlapping_transactions_never_commit_below_a_seen_seq(self, db, tenant):
        """T1 takes a seq and stalls; T2 must wait and commit after it, so a reader that saw
        T2's seq can never later find T1's lower seq appear (the late-commit hole)."""
        org = tenant.org_id
        t1_has_seq = asyncio.Event()
        release_t1 = asyncio.Event()

        async def t1() -> None:
            async with db.tenant(org) as conn:
                await write_records(
                    conn,
                    org_id=org,
                    spec=CUSTOMER,
                    replica="server",
                    writes=[RecordWrite(uuid4(), {"business_name": "T1"})],
                )
                t1_has_seq.set()
                await release_t1.wait()

        async def t2() -> None:
            async with db.tenant(org) as conn:
                await write_records(
                    conn,
                    org_id=org,
                    spec=CUSTOMER,
                    replica="server",
                    writes=[RecordWrite(uuid4(), {"business_name": "T2"})],
                )

        task1 = asyncio.create_task(t1())
        await t1_has_seq.wait()
        task2 = asyncio.create_task(t2())
        await asyncio.sleep(0.3)
        # While T1 is open, T2 is blocked on the tenant's seq counter: nothing is visible.
        assert not task2.done()
        assert await log_rows(db, org) == []
        release_t1.set()
        await asyncio.gather(task1, task2)
        rows = await log_rows(db, org)
        assert [r["seq"] for r in rows] == [1, 2]

    async def test_reader_polling_during_concurrent_writes_never_skips(self, db, tenant):
        """A reader that repeatedly takes 'everything after the last seq it saw' while many
        writers commit concurrently ends up with every seq exactly once."""
        org = tenant.org_id
        writers_done = asyncio.Event()
        seen: list[int] = []

        async def writer(n: int) -> None:
            for i in range(10):
                async with db.tenant(org) as conn:
                    await write_records(
                        conn,
                        org_id=org,
                        spec=CUSTOMER,
                        replica="server",
                        writes=[RecordWrite(uuid4(), {"business_name": f"W{n}-{i}"})],
                    )
                await asyncio.sleep(0)

        async def reader() -> None:
            last = 0
            while True:
                done = writers_done.is_set()
                async with db.tenant(org) as conn:
                    result = await conn.execute(
                        select(change_log.c.seq)
                        .where(change_log.c.org_id == org, change_log.c.seq > last)
                        .order_by(change_log.c.seq)
                    )
                    new = list(result.scalars())
                seen.extend(new)
                if new:
                    last = new[-1]
                if done:
                    return
                await asyncio.sleep(0)

        reader_task = asyncio.create_task(reader())
        await asyncio.gather(*(writer(n) for n in range(4)))
        writers_done.set()
        await reader_task
        assert seen == list(range(1, 41))
