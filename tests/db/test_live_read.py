"""The hub's live read (``db.live.DatabaseSource.read``): one statement for the head, the new
rows and the reselected devices, on the asyncpg connection, committed after it returns."""

from __future__ import annotations

import asyncio
from uuid import UUID

from sqlalchemy import text

from db.entities import ENTITIES
from db.live import DatabaseSource
from db.queries.orgs import head_seq
from tests.api.queries import ARCHIVE_CUSTOMER, CREATE_CONTACT, REENABLE_CUSTOMER, make_tree
from tests.api.sync_client import Device
from tests.api.test_subscriptions import uuid_of


async def rows_after(db, org_id: UUID, after: int) -> list[tuple[str, UUID, int, bool]]:
    """Every synced row with a seq above ``after``, in seq order (what a read must hold)."""
    rows = []
    async with db.tenant(org_id) as conn:
        for spec in ENTITIES.values():
            result = await conn.execute(
                text(
                    f"SELECT id, seq, deleted FROM {spec.table.name}"
                    " WHERE org_id = :org AND seq > :after"
                ),
                {"org": org_id, "after": after},
            )
            rows += [(spec.type.value, r.id, int(r.seq), r.deleted) for r in result]
    return sorted(rows, key=lambda r: r[2])


async def current_head(db, org_id: UUID) -> int:
    async with db.tenant(org_id) as conn:
        return await head_seq(conn, org_id)


async def test_a_read_holds_the_rows_the_head_and_the_visibility_facts(db, tenant):
    admin = tenant.admin
    trees = [await make_tree(admin, f"R{n}") for n in range(3)]
    customer = [uuid_of(t["customer"]) for t in trees]
    served = await Device(admin).register()
    await served.sync()
    other = await Device(admin).register()
    await other.sync()
    start = await current_head(db, tenant.org_id)
    # After the start: an archive, an archive and restore, two selection changes (one of a
    # device this process does not serve), a new contact.
    await admin(ARCHIVE_CUSTOMER, {"id": trees[1]["customer"]})
    await admin(ARCHIVE_CUSTOMER, {"id": trees[2]["customer"]})
    await admin(REENABLE_CUSTOMER, {"id": trees[2]["customer"]})
    await served.select("SELECTED", [customer[0]])
    await other.select("SELECTED", [customer[2]])
    await admin(CREATE_CONTACT, {"input": {"customerId": trees[0]["customer"], "firstName": "B"}})
    head = await current_head(db, tenant.org_id)
    served_id = UUID(uuid_of(served.id))

    source = DatabaseSource(db)
    checked_out = db.engine.pool.checkedout()
    batch = await source.read(tenant.org_id, start, [served_id])

    assert (batch.after, batch.head) == (start, head)
    expected = await rows_after(db, tenant.org_id, start)
    assert [(c.entity.value, c.record_id, c.seq, c.deleted) for c in batch.changes] == expected
    archived = {UUID(customer[1])}
    assert batch.archived == [(c.customer_id in archived) for c in batch.changes], (
        "rows of the archived customer (and only those) are marked"
    )
    assert batch.visibility_changed == {UUID(customer[1]), UUID(customer[2])}
    # Only among the devices asked about.
    assert batch.reselected_devices == {served_id}
    contact = next(c for c in batch.changes if c.entity.value == "contact")
    assert contact.data is not None
    assert contact.data["firstName"] == "B"
    # The transaction commits after the read returned; the connection then goes back.
    await asyncio.gather(*source._commits)
    assert db.engine.pool.checkedout() == checked_out


async def test_a_read_with_nothing_new_is_empty(db, tenant):
    await make_tree(tenant.admin, "Quiet")
    head = await current_head(db, tenant.org_id)
    source = DatabaseSource(db)
    checked_out = db.engine.pool.checkedout()
    batch = await source.read(tenant.org_id, head, [])
    assert (batch.after, batch.head, batch.changes) == (head, head, [])
    assert not batch.visibility_changed
    assert not batch.reselected_devices
    await asyncio.gather(*source._commits)
    assert db.engine.pool.checkedout() == checked_out
