"""A pull page's start in one call (``fieldsync_pull_start``, migration 0014) against the
statements it replaces: the device read and locked (``lock_for_feed``), the compaction
horizon, the head seq, and the page setup (``db.pull.PAGE_SETUP``: whether the page needs
its backfill parts, and the planner settings), for devices in every situation of
``tests/db/test_grouped_pages.py``'s scene and for every checkpoint they could send.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from db import raw
from db.commands import sync as commands
from db.pull import PAGE_SETUP, PAGE_SETUP_PARAMS, page_parameters
from db.queries import devices as device_queries
from db.queries.orgs import head_seq
from db.tables import orgs
from sync.checkpoint import Checkpoint
from tests.db import test_grouped_pages

# The devices of the grouped-pages tests, in every situation a page depends on.
scene = test_grouped_pages.scene

SETTINGS = ("plan_cache_mode", "random_page_cost")


async def start(conn: Any, org_id: Any, user_id: Any, device_id: Any, since: int | None) -> Any:
    rows = await raw.fetch(
        conn,
        commands.PULL_START,
        org_id,
        user_id,
        device_id,
        True,
        since,
        *commands.PULL_START_SETTINGS,
    )
    return rows[0] if rows else None


async def settings(conn: Any) -> list[str]:
    return [
        (await conn.execute(text(f"SELECT current_setting('{name}')"))).scalar_one()
        for name in SETTINGS
    ]


async def statements(db: Any, org_id: Any, user_id: Any, device_id: Any, since: int) -> Any:
    """What the separate statements find, as the start returns it."""
    async with db.tenant(org_id) as conn:
        compacted = (
            await conn.execute(select(orgs.c.compacted_seq).where(orgs.c.org_id == org_id))
        ).scalar_one()
        device = await commands.lock_for_feed(conn, org_id, user_id, device_id)
        head = await head_seq(conn, org_id)
        # A checkpoint older than the horizon starts the feed over (``pull_page``).
        checkpoint = Checkpoint(since) if since >= compacted else Checkpoint()
        params = page_parameters(org_id, device, checkpoint, head, 10)
        [setup] = await raw.fetch(conn, PAGE_SETUP, *(params[n] for n in PAGE_SETUP_PARAMS))
        found = (
            device["selection_mode"],
            device["mode_since_seq"],
            device["selected_since_seq"],
            device["feed_positions"],
            compacted,
            head,
            setup[0],
        )
        return found, await settings(conn)


class TestPullStart:
    async def test_the_start_finds_what_the_statements_do(self, db, scene):
        """Every device of the scene from every seq up to the head (and before the
        compaction horizon): the same device facts, head, backfill and settings."""
        org_id, user = scene["org_id"], scene["user"]
        async with db.tenant(org_id) as conn:
            head = await head_seq(conn, org_id)
        seen = set()
        for horizon in (0, head // 2):
            async with db.tenant(org_id) as conn:
                await conn.execute(
                    update(orgs).where(orgs.c.org_id == org_id).values(compacted_seq=horizon)
                )
            for sub, _ in scene["requests"]:
                for since in range(head + 1):
                    async with db.tenant(org_id) as conn:
                        row = await start(conn, org_id, user.id, sub.device_id, since)
                        assert row is not None
                        assert row["locked"]
                        got = (
                            (
                                row["mode"],
                                row["mode_since"],
                                row["selected_since"],
                                row["positions"],
                                row["compacted"],
                                row["head"],
                                row["backfill"],
                            ),
                            await settings(conn),
                        )
                    assert got == await statements(db, org_id, user.id, sub.device_id, since)
                    seen.add(row["backfill"])
        async with db.tenant(org_id) as conn:
            await conn.execute(update(orgs).where(orgs.c.org_id == org_id).values(compacted_seq=0))
        assert seen == {True, False}

    async def test_no_row_for_a_device_that_is_not_the_callers(self, db, scene):
        """Another user's device, an unknown one and an inactive one: nothing (NotFound)."""
        org_id, user = scene["org_id"], scene["user"]
        device_id = scene["requests"][0][0].device_id
        async with db.tenant(org_id) as conn:
            assert await start(conn, org_id, org_id, device_id, 0) is None
            assert await start(conn, org_id, user.id, org_id, 0) is None
            await conn.execute(
                text("UPDATE devices SET active = false WHERE id = :d"), {"d": device_id}
            )
            assert await start(conn, org_id, user.id, device_id, 0) is None
            await conn.execute(
                text("UPDATE devices SET active = true WHERE id = :d"), {"d": device_id}
            )

    async def test_a_selected_device_whose_user_may_not_select_is_not_locked(self, db, scene):
        """The caller switches it to ALL under its own lock: the start reads, locks nothing
        and sets nothing (where a device it may pull is locked against selection changes,
        and the page's bookkeeping commits without waiting for the WAL flush)."""
        org_id, user = scene["org_id"], scene["user"]
        device_id = scene["requests"][1][0].device_id  # SELECTED
        lock = text("SELECT 1 FROM devices WHERE id = :d FOR UPDATE NOWAIT")
        commit_mode = text("SELECT current_setting('synchronous_commit')")
        async with db.tenant(org_id) as conn:
            default = (await conn.execute(commit_mode)).scalar_one()
        for may_select, locked in ((False, False), (True, True)):
            async with db.tenant(org_id) as conn:
                rows = await raw.fetch(
                    conn,
                    commands.PULL_START,
                    org_id,
                    user.id,
                    device_id,
                    may_select,
                    0,
                    *commands.PULL_START_SETTINGS,
                )
                assert [r["locked"] for r in rows] == [locked]
                if not locked:
                    assert (rows[0]["head"], rows[0]["backfill"]) == (None, None)
                # A page's bookkeeping commits asynchronously; the switch to ALL does not.
                mode = (await conn.execute(commit_mode)).scalar_one()
                assert mode == ("off" if locked else default)
                async with db.tenant(org_id) as other:
                    if locked:
                        with pytest.raises(DBAPIError, match="could not obtain lock"):
                            await other.execute(lock, {"d": device_id})
                    else:
                        await other.execute(lock, {"d": device_id})

    async def test_the_head_is_read_once_the_lock_is_granted(self, db, scene):
        """A selection change that commits while the start waits for the device's lock is
        below the head the start reads (each statement of the function takes a snapshot of
        its own): the page sees the changed device and everything the change wrote."""
        org_id, user = scene["org_id"], scene["user"]
        device_id = scene["requests"][2][0].device_id  # ALL mode, synced

        async def alone() -> Any:
            async with db.tenant(org_id) as conn:
                return await start(conn, org_id, user.id, device_id, 0)

        async with db.tenant(org_id) as conn:
            device = await commands.owned_device(conn, org_id, user.id, device_id, lock=True)
            waiting = asyncio.create_task(alone())
            await asyncio.sleep(0.3)
            assert not waiting.done()
            changed = await device_queries.set_selection(
                conn, org_id=org_id, device=device, mode="SELECTED", customer_ids=[]
            )
        row = await asyncio.wait_for(waiting, 10)
        assert row["mode"] == "SELECTED"
        assert row["head"] >= changed["mode_since_seq"] > 0
