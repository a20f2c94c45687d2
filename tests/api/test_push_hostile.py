"""Untrusted sync input never stalls or corrupts the server (hardening issue).

Through the GraphQL HTTP API on the real PostgreSQL: a change the database refuses fails
alone and the rest of its push is stored; a compacted tombstone cannot be resurrected; a
counter at the Int limit does not brick a device; malformed version vectors, counters and
checkpoints, as variables and as inline literals, are typed errors, never
INTERNAL_SERVER_ERROR.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from db.compaction import compact
from db.engine import create_engine, to_async_url
from tests.api.queries import make_customer
from tests.api.sync_client import PUSH, Device
from tests.api.ws_client import CHANGES, Socket

CUSTOMER_COUNT = "{ customers(first: 50) { totalCount edges { node { businessName } } } }"
NODE = "query($id: ID!) { node(id: $id) { __typename } }"


async def owner_ddl(database_url: str, sql: str) -> None:
    """Run DDL as the database owner."""
    engine = create_engine(to_async_url(database_url), pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def poisoned_name(database_url: str) -> AsyncIterator[str]:
    """A business name the database refuses (a check constraint added for the block): a
    change setting it passes every check of the server and fails in the database."""
    poison = f"poison-{uuid.uuid4().hex[:8]}"
    name = f"test_{poison.replace('-', '_')}"
    await owner_ddl(
        database_url,
        f"ALTER TABLE customers ADD CONSTRAINT {name}"
        f" CHECK (business_name IS DISTINCT FROM '{poison}') NOT VALID",
    )
    try:
        yield poison
    finally:
        await owner_ddl(database_url, f"ALTER TABLE customers DROP CONSTRAINT {name}")


def raw_id(global_id: str) -> str:
    return base64.b64decode(global_id).decode().split(":", 1)[1]


def global_customer_id(record_id: str) -> str:
    return base64.b64encode(f"Customer:{record_id}".encode()).decode()


def create(device: Device, name: str, **fields: Any) -> dict[str, Any]:
    return device.change("customer", str(uuid.uuid4()), {"businessName": name, **fields}, base=None)


def outcomes(result: dict[str, Any]) -> list[str]:
    assert result["__typename"] == "PushResult", result
    return [r["outcome"] for r in result["results"]]


def without_replayed(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "replayed"} for r in result["results"]]


async def names(tenant: Any) -> list[str]:
    data = await tenant.admin(CUSTOMER_COUNT)
    return sorted(e["node"]["businessName"] for e in data["customers"]["edges"])


def assert_typed(response: Any) -> dict[str, Any]:
    """The body of a response that is not a masked internal error."""
    body: dict[str, Any] = response.json()
    codes = [e.get("extensions", {}).get("code") for e in body.get("errors") or []]
    assert "INTERNAL_SERVER_ERROR" not in codes, body
    assert response.status_code in (200, 400), body
    return body


class TestDatabaseRefusalsArePerChange:
    async def test_an_empty_email_taken_twice_fails_alone(self, tenant):
        """[innocent, email "", email ""] stores the innocent change; the second empty
        email (taken under the unique index) fails with an error on `email`; a replay
        answers the same and writes nothing."""
        device = await Device(tenant.admin).register()
        changes = [
            create(device, "Innocent"),
            create(device, "First blank", email=""),
            create(device, "Second blank", email=""),
        ]
        first = await device.push(changes)
        got = outcomes(first)
        assert got[0] == "APPLIED"
        assert got[2] == "VALIDATION_FAILED"
        # Refused as taken, or as invalid where validation refuses empty emails.
        assert [e["field"] for e in first["results"][2]["fieldErrors"]] == ["email"]
        if got[1] == "APPLIED":
            assert "taken" in first["results"][2]["fieldErrors"][0]["message"]
        assert "Innocent" in await names(tenant)
        replay = await device.push(changes)
        assert [r["replayed"] for r in replay["results"]] == [True, True, True]
        assert without_replayed(replay) == without_replayed(first)
        assert len(await names(tenant)) == got.count("APPLIED")

    async def test_an_email_taken_by_an_existing_customer_fails_alone(self, tenant):
        """An email another live customer holds (the same letters in another case, as the
        unique index sees it) fails only that change, with `email` taken."""
        await make_customer(tenant.admin, businessName="Owner", email="desk@acme.example")
        device = await Device(tenant.admin).register()
        result = await device.push(
            [
                create(device, "Before"),
                create(device, "Thief", email="DESK@acme.example"),
                create(device, "After"),
            ]
        )
        assert outcomes(result) == ["APPLIED", "VALIDATION_FAILED", "APPLIED"]
        assert result["results"][1]["fieldErrors"] == [
            {"field": "email", "message": "is already taken by another customer"}
        ]
        assert await names(tenant) == ["After", "Before", "Owner"]

    async def test_two_creates_with_one_email_store_the_first(self, tenant):
        """Two new customers with the same email in one push: the first is stored, the
        second fails with `email` taken."""
        device = await Device(tenant.admin).register()
        result = await device.push(
            [
                create(device, "One", email="same@x.example"),
                create(device, "Two", email="Same@x.example"),
            ]
        )
        assert outcomes(result) == ["APPLIED", "VALIDATION_FAILED"]
        assert result["results"][1]["fieldErrors"][0]["field"] == "email"
        assert await names(tenant) == ["One"]

    async def test_an_email_handed_on_within_a_push_is_stored(self, tenant):
        """B renames away, A frees its email, B takes it: valid in this order, so all three
        are applied and the final emails are stored (the batch is decided in order, and the
        unique index only judges what the order allows)."""
        a = await make_customer(tenant.admin, businessName="A", email="a@x.example")
        b = await make_customer(tenant.admin, businessName="B", email="b@x.example")
        device = await Device(tenant.admin).register()
        await device.sync()
        a_id, b_id = raw_id(a["id"]), raw_id(b["id"])
        first = device.change("customer", b_id, {"email": "tmp@x.example"})
        after_first = {**device.store[("customer", b_id)]["version"], device.replica: 1}
        result = await device.push(
            [
                first,
                device.change("customer", a_id, {"email": "new-a@x.example"}),
                # From the version B has after the first change (the device's own write).
                device.change("customer", b_id, {"email": "a@x.example"}, base=after_first),
            ]
        )
        assert outcomes(result) == ["APPLIED", "APPLIED", "APPLIED"]
        data = await tenant.admin(
            "{ customers(first: 5, orderBy: {field: NAME}) { edges { node { email } } } }"
        )
        assert [e["node"]["email"] for e in data["customers"]["edges"]] == [
            "new-a@x.example",
            "a@x.example",
        ]

    @pytest.mark.parametrize("kind", ["check constraint", "data exception"])
    async def test_any_database_refusal_fails_only_its_change(self, tenant, database_url, kind):
        """Changes the database refuses for a rule of their own (a check constraint, or a
        trigger raising a data exception, added by the test) get VALIDATION_FAILED on
        `patch`, final for their clientMutationIds; the 28 others around them are stored,
        and a replay answers the same and writes nothing."""
        poison = f"poison-{uuid.uuid4().hex[:8]}"
        name = f"test_{poison.replace('-', '_')}"
        if kind == "check constraint":
            install = [
                f"ALTER TABLE customers ADD CONSTRAINT {name}"
                f" CHECK (business_name IS DISTINCT FROM '{poison}') NOT VALID"
            ]
            remove = [f"ALTER TABLE customers DROP CONSTRAINT {name}"]
        else:
            install = [
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.business_name = '{poison}' THEN RAISE EXCEPTION 'out of range'"
                " USING ERRCODE = '22003'; END IF; RETURN NEW; END $$",
                f"CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON customers"
                f" FOR EACH ROW EXECUTE FUNCTION {name}()",
            ]
            remove = [f"DROP TRIGGER {name} ON customers", f"DROP FUNCTION {name}()"]
        for sql in install:
            await owner_ddl(database_url, sql)
        try:
            device = await Device(tenant.admin).register()
            changes = [create(device, f"Good {i:02}") for i in range(30)]
            for index in (3, 21):
                changes[index] = create(device, poison)
            for index, change in enumerate(changes):
                change["counter"] = index + 1  # still one up per change, in push order
            first = await device.push(changes)
            expected = ["APPLIED"] * 30
            expected[3] = expected[21] = "VALIDATION_FAILED"
            assert outcomes(first) == expected
            for index in (3, 21):
                assert first["results"][index]["fieldErrors"][0]["field"] == "patch"
                assert first["results"][index]["version"] is None
            replay = await device.push(changes)
            assert without_replayed(replay) == without_replayed(first)
            assert await names(tenant) == [f"Good {i:02}" for i in range(30) if i not in (3, 21)]
        finally:
            for sql in remove:
                await owner_ddl(database_url, sql)

    async def test_a_push_of_many_refused_changes_stops_trying_and_stays_retryable(
        self, tenant, database_url
    ):
        """Finding each refused change costs batch work, so past 16 refusals the rest of
        the push is left untried: its changes come back NOT_TRIED (not a final
        VALIDATION_FAILED), keep no receipt and no counter, and the device pushes them
        again as they are."""
        async with poisoned_name(database_url) as poison:
            device = await Device(tenant.admin).register()
            changes = [create(device, "A")]
            changes += [create(device, poison) for _ in range(20)]
            changes += [create(device, "B")]
            first = await device.push(changes)
            fields = [[e["field"] for e in r["fieldErrors"]] for r in first["results"]]
            assert fields == [[]] + [["patch"]] * 16 + [[]] * 5
            assert outcomes(first) == ["APPLIED"] + ["VALIDATION_FAILED"] * 16 + ["NOT_TRIED"] * 5
            assert all("not tried" in r["message"] for r in first["results"][17:])
            again = await device.push(changes[17:])
            assert outcomes(again) == ["VALIDATION_FAILED"] * 4 + ["APPLIED"]
            assert not any(r["replayed"] for r in again["results"])
            assert await names(tenant) == ["A", "B"]


class TestCompactedTombstones:
    async def test_an_upsert_of_a_compacted_id_does_not_resurrect_it(self, db, tenant):
        """After `fieldsync compact`, an UPSERT with the deleted customer's id, with or
        without a base version, answers DELETED and the customer stays gone."""
        customer = await make_customer(tenant.admin, businessName="Gone", email="g@x.example")
        device = await Device(tenant.admin).register()
        await device.sync()
        version = device.store[("customer", raw_id(customer["id"]))]["version"]
        deleted = await tenant.admin(
            "mutation($id: ID!) { deleteCustomer(id: $id) { __typename } }", {"id": customer["id"]}
        )
        assert deleted["deleteCustomer"]["__typename"] != "ValidationError", deleted
        await device.sync()
        async with db.tenant(tenant.org_id) as conn:
            assert (await compact(conn, tenant.org_id)).removed == 1
        async with db.tenant(tenant.org_id) as conn:
            assert (await compact(conn, tenant.org_id)).removed == 0  # once only
        record_id = raw_id(customer["id"])
        result = await device.push(
            [
                device.change("customer", record_id, {"businessName": "Back"}, base=None),
                device.change("customer", record_id, {"businessName": "Back"}, base={}),
                device.change("customer", record_id, {"businessName": "Back"}, base=version),
                device.change("customer", record_id, None, op="DELETE", base=None),
            ]
        )
        assert outcomes(result) == ["DELETED"] * 4
        assert await names(tenant) == []
        node = await tenant.admin(NODE, {"id": customer["id"]})
        assert node["node"] is None
        # The email left with the data: a new customer may take it.
        await make_customer(tenant.admin, businessName="New", email="g@x.example")


class TestCounters:
    async def test_a_counter_at_the_int_limit_does_not_brick_the_device(self, tenant):
        """A push with counter 2147483647 is refused on `counter` (no re-registration), and
        the device goes on pushing with its next counter, the refused change included (a
        counter refusal keeps no receipt)."""
        device = await Device(tenant.admin).register()
        huge = {**create(device, "Huge"), "counter": 2147483647}
        result = await device.push([huge])
        assert outcomes(result) == ["VALIDATION_FAILED"]
        assert result["reregisterRequired"] is False
        assert result["results"][0]["fieldErrors"][0]["field"] == "counter"
        device.counter = 1
        result = await device.push([{**huge, "counter": 1}, create(device, "Next")])
        assert outcomes(result) == ["APPLIED", "APPLIED"]
        assert await names(tenant) == ["Huge", "Next"]

    @pytest.mark.parametrize("counter", [0, -1, -2147483648])
    async def test_a_counter_below_one_is_refused_and_the_device_stays_usable(
        self, tenant, counter
    ):
        """Zero and negative counters fail on `counter` and do not move the device."""
        device = await Device(tenant.admin).register()
        result = await device.push([{**create(device, "Bad"), "counter": counter}])
        assert outcomes(result) == ["VALIDATION_FAILED"]
        assert result["results"][0]["fieldErrors"][0]["field"] == "counter"
        assert result["reregisterRequired"] is False
        device.counter = 0
        assert outcomes(await device.push([create(device, "Good")])) == ["APPLIED"]

    @pytest.mark.parametrize("counter", [2147483648, 2**63, 1.5, "7", None])
    async def test_a_counter_that_is_not_an_int_is_a_validation_error(self, tenant, counter):
        """Counters past Int, floats, strings and null are GraphQL errors, not 500s."""
        device = await Device(tenant.admin).register()
        body = assert_typed(
            await tenant.admin.post(
                PUSH, {"d": device.id, "changes": [{**create(device, "X"), "counter": counter}]}
            )
        )
        assert body.get("errors"), body

    @pytest.mark.parametrize("literal", ["2147483648", "99999999999999999999", "1.5", '"7"'])
    async def test_an_inline_counter_that_is_not_an_int_is_a_validation_error(
        self, tenant, literal
    ):
        """The same written inline in the document."""
        device = await Device(tenant.admin).register()
        body = assert_typed(await tenant.admin.post(inline_push(counter=literal), {"d": device.id}))
        assert body.get("errors"), body


def inline_push(
    base: str = "null", counter: str = "1", patch: str = '{customer: {businessName: "X"}}'
) -> str:
    return f"""mutation($d: ID!) {{ pushChanges(deviceId: $d, changes: [{{
      clientMutationId: "{uuid.uuid4().hex}", recordId: "{uuid.uuid4()}", op: UPSERT,
      baseVersion: {base}, counter: {counter}, patch: {patch}}}]) {{
      __typename ... on PushResult {{ results {{ outcome fieldErrors {{ field message }} }} }}
      ... on UserError {{ code message }} }} }}"""


BAD_VECTORS: dict[str, tuple[Any, str]] = {
    "negative": ({"server": -1}, "{server: -1}"),
    "string": ("x", '"x"'),
    "float": ({"server": 1.5}, "{server: 1.5}"),
    "huge": ({"server": 2**63}, "{server: 99999999999999999999}"),
    "string counter": ({"server": "1"}, '{server: "1"}'),
    "list": ([1], "[1]"),
    "number": (3, "3"),
    "boolean counter": ({"server": True}, "{server: true}"),
    "nested": ({"server": {"a": 1}}, "{server: {a: 1}}"),
    "null counter": ({"server": None}, "{server: null}"),
    "empty replica": ({"": 1}, '{server: 1, dX: "x"}'),
}


class TestMalformedVersionVectors:
    @pytest.mark.parametrize("name", list(BAD_VECTORS))
    async def test_as_a_variable(self, tenant, name):
        """A malformed baseVersion in the variables is a GraphQL validation error."""
        device = await Device(tenant.admin).register()
        change = create(device, "X")
        change["baseVersion"] = BAD_VECTORS[name][0]
        body = assert_typed(await tenant.admin.post(PUSH, {"d": device.id, "changes": [change]}))
        assert body.get("errors"), body
        assert body.get("data") is None, body
        assert "VersionVector" in json.dumps(body), body

    @pytest.mark.parametrize("name", list(BAD_VECTORS))
    async def test_inline(self, tenant, name):
        """The same written inline in the document: a validation error naming the
        VersionVector, never INTERNAL_SERVER_ERROR."""
        device = await Device(tenant.admin).register()
        body = assert_typed(
            await tenant.admin.post(inline_push(base=BAD_VECTORS[name][1]), {"d": device.id})
        )
        assert body.get("errors"), body
        assert body.get("data") is None, body
        assert "VersionVector" in body["errors"][0]["message"], body

    async def test_a_valid_inline_vector_still_works(self, tenant):
        """An inline base version is read like a variable (unknown record -> DELETED)."""
        device = await Device(tenant.admin).register()
        body = assert_typed(
            await tenant.admin.post(inline_push(base="{server: 3, dX: 0}"), {"d": device.id})
        )
        assert body["data"]["pushChanges"]["results"][0]["outcome"] == "DELETED", body

    async def test_an_inline_json_number_past_64_bits_is_refused(self, tenant):
        """A custom field value written inline as a huge integer fails its change (orjson
        cannot store it) instead of the whole push."""
        device = await Device(tenant.admin).register()
        patch = '{customer: {businessName: "X", customFields: {n: 99999999999999999999}}}'
        body = assert_typed(await tenant.admin.post(inline_push(patch=patch), {"d": device.id}))
        assert body["data"]["pushChanges"]["results"][0]["outcome"] == "VALIDATION_FAILED", body


def forged_checkpoint(seq: str, rank: str, rid: str, base: str) -> str:
    raw = f"v1.{seq}.{rank}.{rid}.{base}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


FORGED = {
    "huge rank": forged_checkpoint("1", "99999999999999999999", "a" * 32, "1"),
    "huge seq": forged_checkpoint("99999999999999999999", "-1", "", "99999999999999999999"),
    "int rank overflow": forged_checkpoint("1", "2147483648", "a" * 32, "1"),
    "huge base": forged_checkpoint("5", "-1", "", "99999999999999999999"),
}

PULL = """query($d: ID!, $since: String) { pull(deviceId: $d, since: $since) {
  checkpoint hasMore changes { recordId } } }"""


class TestForgedCheckpoints:
    @pytest.mark.parametrize("name", list(FORGED))
    async def test_pull_refuses_them_as_bad_user_input(self, tenant, name):
        """pull(since:) with a position beyond the database's integer types is refused with
        BAD_USER_INPUT."""
        await make_customer(tenant.admin)
        device = await Device(tenant.admin).register()
        body = assert_typed(await tenant.admin.post(PULL, {"d": device.id, "since": FORGED[name]}))
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
        # The device is fine afterwards.
        assert await device.sync() == 1

    async def test_inline_since_is_refused_too(self, tenant):
        """The same checkpoint written inline."""
        await make_customer(tenant.admin)  # the head is past the forged seq
        device = await Device(tenant.admin).register()
        query = (
            PULL.replace("$since: String", "")
            .replace("since: $since", f'since: "{FORGED["huge rank"]}"')
            .replace("query($d: ID!, )", "query($d: ID!)")
        )
        body = assert_typed(await tenant.admin.post(query, {"d": device.id}))
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body

    async def test_the_changes_subscription_refuses_them(self, server_pair, db):
        """subscribe changes(since:) with a huge rank is an `error` for that id with
        BAD_USER_INPUT, and the socket stays usable."""
        import httpx

        from tests.conftest import new_tenant

        async with httpx.AsyncClient(base_url=server_pair[0].url, timeout=60) as http:
            tenant = await new_tenant(db, http)
            await make_customer(tenant.admin)  # the head is past the forged seqs
            device = await Device(tenant.admin).register()
            socket = await Socket.open(server_pair[0].ws_url, tenant.admin.token)
            for op_id, since in FORGED.items():
                await socket.send(
                    {
                        "id": op_id,
                        "type": "subscribe",
                        "payload": {
                            "query": CHANGES,
                            "variables": {"d": device.id, "since": since},
                        },
                    }
                )
                message = await socket.recv()
                assert (message["id"], message["type"]) == (op_id, "error"), message
                assert message["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT", message
            await socket.subscribe("ok", device.id)
            await socket.collect("ok", lambda batches: len(batches) >= 1)
            await socket.close()


class TestClientMutationIds:
    @pytest.mark.parametrize("value", ["a\u0000b", "", "x" * 256])
    async def test_an_id_a_receipt_cannot_hold_is_a_validation_error(self, tenant, value):
        """NUL, empty or over-long clientMutationIds are a ValidationError for the push,
        not an internal error."""
        device = await Device(tenant.admin).register()
        change = {**create(device, "X"), "clientMutationId": value}
        body = assert_typed(await tenant.admin.post(PUSH, {"d": device.id, "changes": [change]}))
        assert body["data"]["pushChanges"]["__typename"] == "ValidationError", body
        assert await names(tenant) == []
