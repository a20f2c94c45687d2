"""Subscribers that join together share their catch-up (``db/catch_up.py``), over real
WebSockets against a real server: each still gets exactly its own feed, once, in order.

Many subscriptions of one tenant are sent at once on one instance, so their first pulls
queue behind the instance's pull slots and are served in groups: devices with different
positions (from nothing, from a checkpoint), selections (ALL, SELECTED) and feeds (every
type, customers only), plus members the group must refuse alone (another user's device, a
checkpoint from the future), while a writer commits during the catch-up.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from sync import checkpoint as checkpoints
from tests.api.queries import CREATE_CONTACT
from tests.api.sync_client import Device
from tests.api.ws_client import CHANGES, Socket, ids_in
from tests.conftest import ServerProcess, Tenant, new_tenant

from .test_subscriptions import customers, phone, uuid_of


@pytest.fixture
async def http_a(
    server_pair: tuple[ServerProcess, ServerProcess],
) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=server_pair[0].url, timeout=60) as client:
        yield client  # type: ignore[misc]


@pytest.fixture
async def live(db, http_a) -> Tenant:
    return await new_tenant(db, http_a)


async def _batches_until(socket: Socket, op_id: str, expected: set[str], seconds: float = 60):
    return await socket.collect(op_id, lambda bs: expected <= set(ids_in(bs)), seconds=seconds)


async def test_subscribers_joining_together_each_get_their_feed_once_in_order(server_pair, live):
    """ALL and SELECTED devices, from nothing and from a checkpoint, all feeds or customers
    only, joining at once while a writer commits: every one gets exactly its records, once,
    live writes in commit order; refused members get their own error."""
    a, _ = server_pair
    early = await customers(live.admin, 4, "Early")
    # A device that has already synced the early customers resumes from its checkpoint.
    resuming = await phone(live)
    socket = await Socket.open(a.ws_url, resuming.api.token)
    await socket.subscribe("r", resuming.id)
    first = await _batches_until(socket, "r", set(early))
    resume_from = first[-1]["checkpoint"]
    await socket.close()
    late = await customers(live.admin, 4, "Late")
    contact_owner = late[0]
    contact = await live.admin(
        CREATE_CONTACT, {"input": {"customerId": _gid(contact_owner), "firstName": "Ann"}}
    )
    contact_id = uuid_of(contact["createContact"]["id"])

    selectors = [await phone(live, syncByCustomer=True) for _ in range(6)]
    for n, device in enumerate(selectors):
        await device.select("SELECTED", [early[n % 4], late[n % 4]])
    everyone = [await phone(live) for _ in range(24)]
    stranger = await phone(live)  # another user's device: NOT_FOUND for whoever asks

    written: list[str] = []
    writer = await phone(live)

    async def write_during_catch_up() -> None:
        for _ in range(15):
            change = writer.change("customer", str(uuid.uuid4()), {"businessName": "W"}, base=None)
            result = await writer.push([change])
            assert result["results"][0]["outcome"] == "APPLIED"
            written.append(change["recordId"])

    subs: list[tuple[Device, Socket, str, dict[str, Any], set[str]]] = []
    base_all = set(early) | set(late) | {contact_id}
    for n, device in enumerate(everyone):
        variables: dict[str, Any] = {"d": device.id, "since": None}
        expected = set(base_all)
        if n % 3 == 1:
            variables["types"] = ["CUSTOMER"]
            expected = set(early) | set(late)
        subs.append(
            (device, await Socket.open(a.ws_url, device.api.token), "s", variables, expected)
        )
    subs.append(
        (
            resuming,
            await Socket.open(a.ws_url, resuming.api.token),
            "s",
            {"d": resuming.id, "since": resume_from},
            set(late) | {contact_id},
        )
    )
    for n, device in enumerate(selectors):
        mine = {early[n % 4], late[n % 4]}
        if late[n % 4] == contact_owner:
            mine.add(contact_id)
        subs.append(
            (
                device,
                await Socket.open(a.ws_url, device.api.token),
                "s",
                {"d": device.id, "since": None},
                mine,
            )
        )
    refused_socket = await Socket.open(a.ws_url, everyone[0].api.token)
    refusals = {
        "stranger": {"d": stranger.id, "since": None},
        "future": {"d": everyone[0].id, "since": checkpoints.encode(checkpoints.Checkpoint(10**9))},
    }

    def subscribe_message(op_id: str, variables: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": op_id,
            "type": "subscribe",
            "payload": {"query": CHANGES, "variables": variables},
        }

    writing = asyncio.create_task(write_during_catch_up())
    # Everyone joins at once (one gather of the subscribe messages).
    await asyncio.gather(
        *(sock.send(subscribe_message(op, variables)) for _, sock, op, variables, _ in subs),
        *(refused_socket.send(subscribe_message(op, v)) for op, v in refusals.items()),
    )
    await writing
    all_written = set(written)
    for device, sock, op, variables, expected in subs:
        takes_live = variables.get("types") is None or "CUSTOMER" in variables["types"]
        selects = device in selectors
        want = expected | (all_written if takes_live and not selects else set())
        batches = await _batches_until(sock, op, want)
        got = ids_in(batches)
        assert len(got) == len(set(got)), f"a change arrived twice for {device.id}"
        assert set(got) == want, (device.id, set(got) ^ want)
        order = [i for i in got if i in all_written]
        assert order == [i for i in written if i in set(order)], "live writes out of order"
        if variables["since"] is not None:
            assert not set(got) & set(early), "a resumed subscriber got what it had"
    # Refused members get their own errors; the socket is still usable.
    errors = {}
    for _ in refusals:
        message = await refused_socket.recv()
        assert message["type"] == "error", message
        errors[message["id"]] = message["payload"][0]["extensions"]["code"]
    assert errors == {"stranger": "NOT_FOUND", "future": "BAD_USER_INPUT"}
    # And everyone is live now: one more write reaches the ALL subscribers alone.
    [extra] = await customers(live.admin, 1, "Extra")
    for device, sock, op, _variables, _ in subs:
        if device in selectors:
            continue
        tail = await sock.collect(op, lambda bs: len(bs) >= 1)
        assert ids_in(tail) == [extra]
    for _, sock, *_rest in subs:
        await sock.close()
    await refused_socket.close()


def _gid(record_uuid: str) -> str:
    from schema.node import to_global_id

    return to_global_id("Customer", record_uuid)
