"""The write path's set-based statements (db/write_path.py, db/raw.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from db.entities import CONTACT, CUSTOMER
from db.tables import change_log, customers
from db.write_path import RecordWrite, lock_rows, next_row, persist_rows, write_records


async def stored(db, org_id):
    async with db.tenant(org_id) as conn:
        rows = (await conn.execute(select(customers).order_by(customers.c.seq))).mappings()
        log = (await conn.execute(select(change_log).order_by(change_log.c.seq))).mappings()
        return [dict(r) for r in rows], [dict(r) for r in log]


class TestWritePath:
    async def test_create_update_and_twice_in_one_batch(self, db, tenant):
        """Inserts, then updates of locked rows; a record written twice logs both versions."""
        a, b = uuid4(), uuid4()
        async with db.tenant(tenant.org_id) as conn:
            await write_records(
                conn,
                org_id=tenant.org_id,
                spec=CUSTOMER,
                replica="r1",
                writes=[
                    RecordWrite(
                        a,
                        {"business_name": "A", "phones": [{"type": "WORK", "number": "555 0100"}]},
                    ),
                    RecordWrite(b, {"business_name": "B", "settings": {"taxRate": 5}}),
                ],
            )
        async with db.tenant(tenant.org_id) as conn:
            written = await write_records(
                conn,
                org_id=tenant.org_id,
                spec=CUSTOMER,
                replica="r1",
                writes=[
                    RecordWrite(a, {"business_name": "A2"}),
                    RecordWrite(a, {"email": "a@example.com"}),
                    RecordWrite(b, {}, delete=True),
                ],
            )
        assert [w["version"] for w in written] == [{"r1": 2}, {"r1": 3}, {"r1": 2}]
        rows, log = await stored(db, tenant.org_id)
        by_id = {r["id"]: r for r in rows}
        assert by_id[a]["business_name"] == "A2"
        assert by_id[a]["email"] == "a@example.com"
        assert by_id[a]["phones"] == [{"type": "WORK", "number": "555 0100"}]
        assert by_id[a]["field_dots"]["email"] == ["r1", 3]
        assert by_id[a]["version"] == {"r1": 3}
        assert by_id[b]["deleted"] is True
        assert by_id[b]["settings"] == {"taxRate": 5}
        assert [(r["record_id"], r["op"], r["version"]) for r in log] == [
            (a, "UPSERT", {"r1": 1}),
            (b, "UPSERT", {"r1": 1}),
            (a, "UPSERT", {"r1": 2}),
            (a, "UPSERT", {"r1": 3}),
            (b, "DELETE", {"r1": 2}),
        ]
        assert by_id[a]["seq"] == 4
        assert by_id[b]["seq"] == 5

    async def test_stale_existing_falls_back_to_the_upsert(self, db, tenant):
        """A row said to exist that does not is inserted, not silently dropped."""
        record_id = uuid4()
        now = datetime.now(UTC)
        async with db.tenant(tenant.org_id) as conn:
            row = next_row(
                CUSTOMER, tenant.org_id, None, RecordWrite(record_id, {"first_name": "X"}), "r", now
            )
            assert row is not None
            await persist_rows(
                conn,
                org_id=tenant.org_id,
                spec=CUSTOMER,
                rows=[row],
                existing={record_id},
                replica="r",
                device_id=None,
                now=now,
            )
            locked = await lock_rows(conn, CUSTOMER, tenant.org_id, [record_id, uuid4()])
        assert list(locked) == [record_id]
        assert locked[record_id]["first_name"] == "X"
        assert locked[record_id]["seq"] == row["seq"]

    async def test_unique_violation_is_an_integrity_error(self, db, tenant):
        """Errors of the raw statements keep SQLAlchemy's types and name the index."""
        first, second = uuid4(), uuid4()
        with pytest.raises(IntegrityError) as raised:
            async with db.tenant(tenant.org_id) as conn:
                await write_records(
                    conn,
                    org_id=tenant.org_id,
                    spec=CUSTOMER,
                    replica="r",
                    writes=[
                        RecordWrite(first, {"first_name": "A", "email": "same@example.com"}),
                        RecordWrite(second, {"first_name": "B", "email": "same@example.com"}),
                    ],
                )
        assert "uq_customers_org_email" in str(raised.value.orig)


class TestLockOrder:
    async def test_a_child_create_is_not_blocked_by_a_writer_holding_its_parent(self, db, tenant):
        """Writer A locks customer C for an update; writer B then allocates seqs and inserts a
        contact of C (its foreign-key check takes a key-share lock on C); then A allocates
        seqs. Row locks must let B's check through, else A waits for B's seq row and B for
        C: a deadlock PostgreSQL breaks by failing one of them (it failed pushes with
        INTERNAL_SERVER_ERROR)."""
        customer = uuid4()
        async with db.tenant(tenant.org_id) as conn:
            await write_records(
                conn,
                org_id=tenant.org_id,
                spec=CUSTOMER,
                writes=[RecordWrite(customer, {"business_name": "C"})],
                replica="server",
            )

        async def create_contact() -> None:
            async with db.tenant(tenant.org_id) as b:
                await write_records(
                    b,
                    org_id=tenant.org_id,
                    spec=CONTACT,
                    writes=[
                        RecordWrite(uuid4(), {"first_name": "N"}, links={"customer_id": customer})
                    ],
                    replica="server",
                )

        async with db.tenant(tenant.org_id) as a:
            locked = await lock_rows(a, CUSTOMER, tenant.org_id, [customer])
            # B commits while A holds C: its insert must not wait for A.
            await asyncio.wait_for(create_contact(), timeout=5)
            await write_records(
                a,
                org_id=tenant.org_id,
                spec=CUSTOMER,
                writes=[RecordWrite(customer, {"last_name": "Edited"})],
                replica="server",
                current=locked,
            )


class TestTransientErrors:
    async def test_deadlocks_and_serialization_failures_are_retried_others_are_not(
        self, db, tenant
    ):
        """A real deadlock-detected error from PostgreSQL is transient; a unique violation is
        not (run_write retries only the first)."""
        from sqlalchemy import text

        from db.errors import is_transient

        async with db.tenant(tenant.org_id) as conn:
            for sqlstate, transient in (("40P01", True), ("40001", True), ("23505", False)):
                with pytest.raises(Exception) as raised:  # noqa: PT011 - the driver's class
                    async with conn.begin_nested():
                        await conn.execute(
                            text(
                                "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '"
                                + sqlstate
                                + "'; END $$"
                            )
                        )
                assert is_transient(raised.value) is transient, sqlstate
