"""The `changes` subscription over real WebSockets against two real server processes.

Instances A and B (``server_pair``) share the test database; each test makes a fresh
tenant, because subscriptions need real commits.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from sqlalchemy import text

from db.auth import issue_token
from db.engine import create_engine, to_async_url
from schema.node import from_global_id
from sync import checkpoint as checkpoints
from tests.api.queries import ARCHIVE_CUSTOMER, make_customer
from tests.api.sync_client import Device
from tests.api.ws_client import CHANGES, Socket, ids_in
from tests.conftest import SECRET, ServerProcess, Tenant, new_tenant


@pytest.fixture
async def http_a(
    server_pair: tuple[ServerProcess, ServerProcess],
) -> AsyncIterator[httpx.AsyncClient]:
    """HTTP to instance A."""
    async with httpx.AsyncClient(base_url=server_pair[0].url, timeout=60) as client:
        yield client


@pytest.fixture
async def live(db, http_a) -> Tenant:
    """A fresh tenant whose admin talks to instance A."""
    return await new_tenant(db, http_a)


def uuid_of(global_id: str) -> str:
    return str(from_global_id(global_id)[1])


async def phone(tenant: Tenant, **caps: bool) -> Device:
    """A technician with a registered device."""
    return await Device(await tenant.add_user("TECHNICIAN", **caps)).register()


async def customers(api, n: int, prefix: str = "C") -> list[str]:
    return [
        uuid_of((await make_customer(api, businessName=f"{prefix}{i}"))["id"]) for i in range(n)
    ]


def gql_transport(server: ServerProcess, token: str) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=server.ws_url,
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        init_payload={"authorization": f"Bearer {token}"},
        connect_timeout=10,
        ack_timeout=10,
        close_timeout=5,
    )


async def owner_sql(database_url: str, sql: str, **params: Any) -> list[Any]:
    """Run SQL as the database owner (outside the app role's row-level security)."""
    engine = create_engine(to_async_url(database_url), pool_size=1)
    try:
        async with engine.begin() as conn:
            return list((await conn.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


class TestGqlClient:
    async def test_subscribe_receive_disconnect_resume(self, server_pair, live):
        """gql catches up, receives a live change, and resumes after a disconnect with exactly what it missed."""
        a, _ = server_pair
        device = await phone(live)
        existing = await customers(live.admin, 3)
        request = GraphQLRequest(CHANGES, variable_values={"d": device.id, "since": None})
        seen: list[dict[str, Any]] = []
        async with Client(transport=gql_transport(a, device.api.token)) as session:
            stream = session.subscribe(request)
            first = (await asyncio.wait_for(anext(stream), 15))["changes"]
            assert sorted(c["recordId"] for c in first["changes"]) == sorted(existing)
            assert first["reset"] is False
            assert {c["op"] for c in first["changes"]} == {"UPSERT"}
            created = await customers(live.admin, 1, "Live")
            live_batch = (await asyncio.wait_for(anext(stream), 15))["changes"]
            seen = live_batch["changes"]
            assert [c["recordId"] for c in seen] == created
            assert seen[0]["op"] == "UPSERT"
            assert seen[0]["data"]["businessName"] == "Live0"
            checkpoint = live_batch["checkpoint"]
            await stream.aclose()
        # Offline: an edit and a delete happen meanwhile.
        await live.admin(
            """mutation($id: ID!) { updateCustomer(id: $id, input: {businessName: "Renamed"}) { __typename } }""",
            {"id": _gid(created[0])},
        )
        request = GraphQLRequest(CHANGES, variable_values={"d": device.id, "since": checkpoint})
        async with Client(transport=gql_transport(a, device.api.token)) as session:
            stream = session.subscribe(request)
            resumed = (await asyncio.wait_for(anext(stream), 15))["changes"]
            assert [(c["recordId"], c["data"]["businessName"]) for c in resumed["changes"]] == [
                (created[0], "Renamed")
            ]
            await stream.aclose()


def _gid(record_uuid: str) -> str:
    from schema.node import to_global_id

    return str(to_global_id("Customer", uuid.UUID(record_uuid)))


class TestFanOut:
    async def test_write_on_a_reaches_subscriber_on_b(self, server_pair, live):
        """A change written through instance A reaches a subscriber connected to instance B."""
        _, b = server_pair
        device = await phone(live)
        socket = await Socket.open(b.ws_url, device.api.token)
        await socket.subscribe("1", device.id)
        await socket.collect("1", lambda bs: len(bs) >= 1)  # caught up (empty tenant)
        created = await customers(live.admin, 2)
        batches = await socket.collect("1", lambda bs: len(ids_in(bs)) >= 2, seconds=10)
        assert ids_in(batches) == created
        await socket.close()

    async def test_no_gap_while_catching_up(self, server_pair, live, db):
        """Writes committed while catch-up runs arrive exactly once, after the backlog, in order."""
        _, b = server_pair
        device = await phone(live)
        writer = await phone(live)
        # A backlog of several catch-up pages (pages hold up to 1,000 changes).
        backlog: list[str] = []
        for _ in range(3):
            changes = [
                writer.change("customer", str(uuid.uuid4()), {"businessName": "B"}, base=None)
                for _ in range(1000)
            ]
            result = await writer.push(changes)
            assert {r["outcome"] for r in result["results"]} == {"APPLIED"}
            backlog += [c["recordId"] for c in changes]
        socket = await Socket.open(b.ws_url, device.api.token)
        await socket.subscribe("s", device.id)

        async def write_during_catch_up() -> list[str]:
            ids = []
            for _ in range(40):
                change = writer.change(
                    "customer", str(uuid.uuid4()), {"businessName": "N"}, base=None
                )
                await writer.push([change])
                ids.append(change["recordId"])
            return ids

        concurrent = asyncio.create_task(write_during_catch_up())
        expected = len(backlog) + 40
        # Every id, the writer's 40 included, is what is waited for: the last live change
        # may well arrive before the HTTP answer to its push (then waiting for the writer
        # too, message by message, waited for a message that never comes).
        batches = await socket.collect("s", lambda bs: len(ids_in(bs)) >= expected, seconds=60)
        written = await concurrent
        got = ids_in(batches)
        assert len(got) == len(set(got)), "a change arrived twice"
        assert set(got) == set(backlog) | set(written)
        # Live writes arrive in commit order.
        order = [i for i in got if i in set(written)]
        assert order == [i for i in written if i in set(order)]
        # Nothing more is pending: one more write arrives alone.
        [extra] = await customers(live.admin, 1, "Extra")
        tail = await socket.collect("s", lambda bs: len(bs) >= 1)
        assert ids_in(tail) == [extra]
        await socket.close()

    async def test_listener_drop_misses_nothing(self, server_pair, live, database_url):
        """When B's LISTEN connection is killed, it reconnects and delivers what was written meanwhile."""
        _, b = server_pair
        device = await phone(live)
        socket = await Socket.open(b.ws_url, device.api.token)
        await socket.subscribe("1", device.id)
        await socket.collect("1", lambda bs: len(bs) >= 1)
        name = f"fieldsync-listener-{b.process.pid}"
        killed = await owner_sql(
            database_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name",
            name=name,
        )
        assert killed == [(True,)], killed
        created = await customers(live.admin, 3)
        batches = await socket.collect("1", lambda bs: len(ids_in(bs)) >= 3, seconds=20)
        assert ids_in(batches) == created
        rows = await owner_sql(
            database_url,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name",
            name=name,
        )
        assert rows == [(1,)]
        # And live notices flow again through the new connection.
        more = await customers(live.admin, 1, "After")
        assert ids_in(await socket.collect("1", lambda bs: len(bs) >= 1, seconds=10)) == more
        await socket.close()


class TestRefiltering:
    async def test_selection_change_takes_effect_on_the_open_stream(self, server_pair, live):
        """Selecting another customer sends it whole and the old one as EVICTs; other rows stay filtered."""
        a, _ = server_pair
        device = await phone(live, syncByCustomer=True)
        x, y = await customers(live.admin, 2)
        await device.select("SELECTED", [x])
        socket = await Socket.open(a.ws_url, device.api.token)
        await socket.subscribe("1", device.id)
        [first] = await socket.collect("1", lambda bs: len(bs) >= 1)
        assert ids_in([first]) == [x]
        # A change of the unselected customer does not arrive; one of the selected does.
        await live.admin(
            """mutation($id: ID!) { updateCustomer(id: $id, input: {businessName: "y2"}) { __typename } }""",
            {"id": _gid(y)},
        )
        await live.admin(
            """mutation($id: ID!) { updateCustomer(id: $id, input: {businessName: "x2"}) { __typename } }""",
            {"id": _gid(x)},
        )
        [batch] = await socket.collect("1", lambda bs: len(bs) >= 1)
        assert [(c["recordId"], c["data"]["businessName"]) for c in batch["changes"]] == [(x, "x2")]
        await device.select("SELECTED", [y])
        batches = await socket.collect("1", lambda bs: y in ids_in(bs))
        # The same seq: x's eviction first, then y whole.
        assert [(c["recordId"], c["op"]) for b in batches for c in b["changes"]] == [
            (x, "EVICT"),
            (y, "UPSERT"),
        ]
        await socket.close()

    async def test_archive_evicts_and_capability_withdrawal_switches_to_all(
        self, server_pair, live
    ):
        """Archiving a synced customer evicts it live; withdrawing sync-by-customer sends every customer."""
        a, _ = server_pair
        device = await phone(live, syncByCustomer=True)
        x, y, z = await customers(live.admin, 3)
        await device.select("SELECTED", [x, y])
        socket = await Socket.open(a.ws_url, device.api.token)
        await socket.subscribe("1", device.id)
        await socket.collect("1", lambda bs: len(bs) >= 1)
        await live.admin(ARCHIVE_CUSTOMER, {"id": _gid(y)})
        batches = await socket.collect("1", lambda bs: y in ids_in(bs))
        assert [(c["recordId"], c["op"]) for b in batches for c in b["changes"]] == [(y, "EVICT")]
        me = await device.api("{ me { id } }")
        await live.admin(
            """mutation($id: ID!) { setUserPermissions(userId: $id, capabilities: {syncByCustomer: false}) { __typename } }""",
            {"id": me["me"]["id"]},
        )
        batches = await socket.collect("1", lambda bs: z in ids_in(bs), seconds=15)
        # Switching to ALL backfills every live customer, as a pull would; y stays archived.
        assert set(ids_in(batches)) == {x, z}
        await socket.close()


class TestConnectionLifecycle:
    async def test_token_expiry_closes_the_socket(self, server_pair, live):
        """A token that expires while connected closes the socket with 4001."""
        a, _ = server_pair
        device = await phone(live)
        me = await device.api("{ me { id } }")
        token, _ = issue_token(
            SECRET,
            org_id=live.org_id,
            user_id=uuid.UUID(uuid_of(me["me"]["id"])),
            epoch=0,
            ttl_seconds=2,
        )
        socket = await Socket.open(a.ws_url, token)
        await socket.subscribe("1", device.id)
        await socket.collect("1", lambda bs: len(bs) >= 1)
        assert await socket.closed(seconds=10) == 4001

    async def test_deactivation_closes_the_socket(self, server_pair, live):
        """Deactivating the user closes their open socket with 4002."""
        _, b = server_pair
        device = await phone(live)
        me = await device.api("{ me { id } }")
        socket = await Socket.open(b.ws_url, device.api.token)
        await socket.subscribe("1", device.id)
        await socket.collect("1", lambda bs: len(bs) >= 1)
        await live.admin(
            """mutation($id: ID!) { setUserActive(userId: $id, active: false) { __typename } }""",
            {"id": me["me"]["id"]},
        )
        assert await socket.closed(seconds=10) == 4002

    async def test_ping_pong_and_queries_over_the_socket(self, server_pair, live):
        """The server answers ping with pong, and runs a query sent over the socket."""
        a, _ = server_pair
        socket = await Socket.open(a.ws_url, live.admin.token)
        await socket.send({"type": "ping"})
        assert await socket.recv() == {"type": "pong"}
        await socket.send(
            {"id": "q", "type": "subscribe", "payload": {"query": "{ me { email } }"}}
        )
        assert (await socket.recv())["payload"]["data"]["me"]["email"] == live.admin_email
        assert await socket.recv() == {"id": "q", "type": "complete"}
        await socket.close()

    async def test_client_complete_stops_the_stream(self, server_pair, live):
        """After `complete`, nothing more arrives for that id; the id may be reused."""
        a, _ = server_pair
        device = await phone(live)
        socket = await Socket.open(a.ws_url, device.api.token)
        await socket.subscribe("1", device.id)
        await socket.collect("1", lambda bs: len(bs) >= 1)
        await socket.send({"id": "1", "type": "complete"})
        await socket.send({"type": "ping"})
        assert await socket.recv() == {"type": "pong"}
        await customers(live.admin, 1)
        await socket.send({"type": "ping"})
        assert await socket.recv() == {"type": "pong"}  # no `next` for "1" came first
        await socket.subscribe("1", device.id)
        assert len(ids_in(await socket.collect("1", lambda bs: len(bs) >= 1))) == 1
        await socket.close()


class TestBadInput:
    """Each bad input gets its documented code; the instance keeps serving a bystander."""

    @pytest.fixture
    async def bystander(self, server_pair, live) -> AsyncIterator[tuple[Socket, Tenant]]:
        device = await phone(live)
        socket = await Socket.open(server_pair[0].ws_url, device.api.token)
        await socket.subscribe("b", device.id)
        await socket.collect("b", lambda bs: len(bs) >= 1)
        yield socket, live
        # Still served: a new change reaches it.
        created = await customers(live.admin, 1, "Bystander")
        assert ids_in(await socket.collect("b", lambda bs: len(bs) >= 1)) == created
        await socket.close()

    @pytest.mark.parametrize(
        ("messages", "code"),
        [
            ([{"id": "1", "type": "subscribe", "payload": {"query": CHANGES}}], 4401),
            (["not json"], 4400),
            ([b"\xff\xfe"], 4400),
            (['["a list"]'], 4400),
            ([{"type": 42}], 4400),
            ([{"type": "next", "id": "1"}], 4400),
            ([{"type": "connection_init", "payload": {"authorization": "Bearer nonsense"}}], 4403),
            ([{"type": "connection_init", "payload": {}}], 4403),
            ([{"type": "connection_init"}], 4403),
        ],
    )
    async def test_protocol_violations_close_with_their_code(
        self, server_pair, bystander, messages, code
    ):
        """Malformed messages, subscribing before init and bad tokens close the socket with the documented code."""
        socket = await Socket.open(server_pair[0].ws_url, init=False)
        for message in messages:
            await socket.send(message)
        assert await socket.closed() == code

    async def test_expired_and_revoked_tokens_are_refused_at_init(self, server_pair, bystander):
        """An expired token, or one of an unknown user, closes with 4403."""
        _, tenant = bystander
        expired, _ = issue_token(
            SECRET, org_id=tenant.org_id, user_id=uuid.uuid4(), epoch=0, ttl_seconds=-5
        )
        unknown, _ = issue_token(
            SECRET, org_id=tenant.org_id, user_id=uuid.uuid4(), epoch=0, ttl_seconds=60
        )
        for token in (expired, unknown):
            socket = await Socket.open(server_pair[0].ws_url, init=False)
            await socket.send({"type": "connection_init", "payload": {"token": token}})
            assert await socket.closed() == 4403

    async def test_every_place_clients_put_the_token_is_accepted(self, server_pair, bystander):
        """`{authorization}`, `{Authorization}`, `{token}` and `{headers: {Authorization}}`
        (what RxDB's and Apollo's WebSocket links send) are each acknowledged; a forged token
        under `headers` still closes with 4403."""
        _, tenant = bystander
        token = tenant.admin.token
        payloads = [
            {"authorization": f"Bearer {token}"},
            {"Authorization": f"Bearer {token}"},
            {"token": token},
            {"headers": {"Authorization": f"Bearer {token}"}},
            {"headers": {"authorization": f"Bearer {token}"}},
        ]
        for payload in payloads:
            socket = await Socket.open(server_pair[0].ws_url, init=False)
            await socket.send({"type": "connection_init", "payload": payload})
            assert await socket.recv() == {"type": "connection_ack"}, payload
            await socket.ws.close()
        socket = await Socket.open(server_pair[0].ws_url, init=False)
        await socket.send(
            {"type": "connection_init", "payload": {"headers": {"Authorization": "Bearer x.y.z"}}}
        )
        assert await socket.closed() == 4403

    async def test_init_timeout_and_second_init(self, server_pair, bystander):
        """No connection_init in time closes with 4408; a second one with 4429."""
        socket = await Socket.open(server_pair[0].ws_url, init=False)
        assert await socket.closed(seconds=10) == 4408
        _, tenant = bystander
        socket = await Socket.open(server_pair[0].ws_url, tenant.admin.token)
        await socket.send(
            {
                "type": "connection_init",
                "payload": {"authorization": f"Bearer {tenant.admin.token}"},
            }
        )
        assert await socket.closed() == 4429

    async def test_subscription_errors_are_per_id(self, server_pair, bystander, db, http_a):
        """Another user's device, another tenant's, a forged or future checkpoint and a bad document are `error`s for that id; the socket stays open."""
        _, tenant = bystander
        mine = await phone(tenant)
        someone_elses = await phone(tenant)
        other_tenant = await new_tenant(db, http_a)
        foreign = await phone(other_tenant)
        socket = await Socket.open(server_pair[0].ws_url, mine.api.token)
        cases = {
            "other-user": ({"d": someone_elses.id}, CHANGES, "NOT_FOUND"),
            "other-tenant": ({"d": foreign.id}, CHANGES, "NOT_FOUND"),
            "not-an-id": ({"d": "nope"}, CHANGES, "BAD_USER_INPUT"),
            "forged": ({"d": mine.id, "since": "Zm9yZ2Vk"}, CHANGES, "BAD_USER_INPUT"),
            "future": (
                {"d": mine.id, "since": checkpoints.encode(checkpoints.Checkpoint(10**9))},
                CHANGES,
                "BAD_USER_INPUT",
            ),
            "bad-document": ({"d": mine.id}, "subscription { changes { nope } }", None),
            "syntax": ({"d": mine.id}, "subscription {", None),
        }
        for op_id, (variables, query, code) in cases.items():
            await socket.send(
                {
                    "id": op_id,
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables},
                }
            )
            message = await socket.recv()
            assert (message["id"], message["type"]) == (op_id, "error"), message
            if code is not None:
                assert message["payload"][0]["extensions"]["code"] == code, message
        # The socket still works for a good subscription.
        await socket.subscribe("ok", mine.id)
        await socket.collect("ok", lambda bs: len(bs) >= 1)
        await socket.close()

    async def test_duplicate_id_closes_4409(self, server_pair, bystander):
        """Reusing an active operation id closes with 4409."""
        _, tenant = bystander
        device = await phone(tenant)
        socket = await Socket.open(server_pair[0].ws_url, device.api.token)
        await socket.subscribe("1", device.id)
        await socket.subscribe("1", device.id)
        assert await socket.closed() == 4409

    async def test_a_thousand_subscriptions_close_4004(self, server_pair, bystander):
        """More operations than the cap (10) on one socket closes it with 4004."""
        _, tenant = bystander
        device = await phone(tenant)
        socket = await Socket.open(server_pair[0].ws_url, device.api.token)
        for n in range(1000):
            try:
                await socket.subscribe(str(n), device.id)
            except Exception:  # noqa: BLE001 - the server closed the socket mid-burst
                break
        assert await socket.closed() == 4004
