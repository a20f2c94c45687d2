"""Tenant isolation under random operations: tenant B's canary rows never reach tenant A.

Tenant B holds customers, contacts, facilities, assets, credentials, a user and a device
whose every text field carries a unique canary string, and an open sync conflict. Hypothesis
sends random valid operations as tenant A's admin and technician over HTTP (lists with
filters, `node(id:)`/`customer(id:)` with B's ids, pull/syncState/push with B's ids,
mutations and credential reveals targeting B's ids) while A's technician holds a `changes`
subscription over WebSocket and B keeps writing. Neither the canary nor any of B's ids may
appear in a response or subscription message (A's own input echoed back in a NotFound or a
push result is not a leak). Bounded by FIELDSYNC_CANARY_EXAMPLES (default 250) and FIELDSYNC_CANARY_BUDGET_SECONDS.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from db.engine import Database
from db.seed import create_org_with_admin
from tests.api.credential_queries import make_credential
from tests.api.queries import CREATE_CONTACT, CREATE_CUSTOMER, CUSTOMER_FIELDS, make_tree
from tests.api.sync_client import Device
from tests.api.test_sync import raw_id
from tests.api.ws_client import Socket
from tests.conftest import LOGIN, PASSWORD, PASSWORD_HASH, Api, LiveServer, Tenant

EXAMPLES = int(os.environ.get("FIELDSYNC_CANARY_EXAMPLES", "250"))
TIME_BUDGET_SECONDS = float(os.environ.get("FIELDSYNC_CANARY_BUDGET_SECONDS", "45"))

NODE_FIELDS = """__typename
  ... on Node { id }
  ... on Customer { displayName businessName firstName lastName email notificationEmails
      addresses { line1 city postalCode } customFields { key value } }
  ... on Contact { firstName lastName email customer { id displayName } }
  ... on Facility { name customer { id displayName } }
  ... on Asset { kind serialNumber }
  ... on Credential { name username url notes customer { id } }
  ... on Device { name }
  ... on User { email name }
  ... on SyncConflict { entity recordId status }"""
RESULT = """__typename ... on UserError { code message } ... on NotFound { id }
  ... on ValidationError { fieldErrors { field message } }"""


@dataclass
class World:
    """Tenant A (admin, technician, device) and tenant B's canary rows."""

    url: str
    canary: str
    a_admin: str
    a_tech: str
    a_device: str
    a_tech_device: str
    a_customer: str
    b_admin: str
    b_ids: dict[str, str] = field(default_factory=dict)  # kind -> global id

    def forbidden(self) -> list[str]:
        """Substrings that may never reach A: the canary, B's global ids and raw uuids."""
        ids = list(self.b_ids.values())
        return [self.canary, *ids, *(raw_id(i) for i in ids)]


async def _tenant(db: Database, http: httpx.AsyncClient, org: str) -> Tenant:
    email = f"canary-{uuid.uuid4().hex[:10]}@example.com"
    org_id = await create_org_with_admin(db, org_name=org, email=email, password_hash=PASSWORD_HASH)
    data = await Api(http)(LOGIN, {"email": email, "password": PASSWORD})
    return Tenant(org_id, email, Api(http, data["login"]["token"]), http)


@pytest.fixture
async def world(db: Database, live_server: LiveServer) -> World:
    """Both tenants on the live server; B seeded with canaries in every text field."""
    canary = f"zqcanary{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        a = await _tenant(db, http, "Tenant A")
        b = await _tenant(db, http, f"Org {canary}")
        a_tree = await make_tree(a.admin, "A Customer")
        a_tech = await a.add_user("TECHNICIAN")
        a_device = await Device(a.admin).register()
        a_tech_device = await Device(a_tech).register()

        b_admin = b.admin
        customer = (
            await b_admin(
                CREATE_CUSTOMER,
                {
                    "input": {
                        "businessName": f"Biz {canary}",
                        "firstName": f"First {canary}",
                        "lastName": f"Last {canary}",
                        "email": f"{canary}@example.com",
                        "notificationEmails": [f"{canary}-n@example.com"],
                        "invoiceCcEmails": [f"{canary}-cc@example.com"],
                        "addresses": [
                            {"type": "BILL_TO", "line1": f"1 {canary} St", "city": canary}
                        ],
                    }
                },
            )
        )["createCustomer"]
        assert customer["__typename"] == "Customer", customer
        contact = (
            await b_admin(
                CREATE_CONTACT,
                {
                    "input": {
                        "customerId": customer["id"],
                        "firstName": f"Ann {canary}",
                        "lastName": canary,
                        "email": f"{canary}-c@example.com",
                        "title": canary,
                        "notes": canary,
                    }
                },
            )
        )["createContact"]
        assert contact["__typename"] == "Contact", contact
        tree = await make_tree(b_admin, f"Tree {canary}")
        facility = (
            await b_admin(
                """mutation($id: ID!, $n: String!) { updateFacility(id: $id, input: {name: $n}) {
                   __typename } }""",
                {"id": tree["facility"], "n": f"HQ {canary}"},
            )
        )["updateFacility"]
        asset = (
            await b_admin(
                """mutation($id: ID!, $k: String!) { updateAsset(id: $id,
                   input: {kind: $k, serialNumber: $k}) { __typename } }""",
                {"id": tree["asset"], "k": f"Door {canary}"},
            )
        )["updateAsset"]
        assert facility["__typename"] == "Facility", facility
        assert asset["__typename"] == "Asset", asset
        credential = await make_credential(
            b_admin,
            {"customerId": customer["id"]},
            name=f"Router {canary}",
            username=canary,
            url=f"https://{canary}.example.com",
            notes=canary,
            password=f"pw-{canary}",
        )
        b_tech = await b.add_user("TECHNICIAN")
        users = await b_admin("{ users { id email } }")
        b_device = await Device(b_tech).register()
        await b_device.sync()
        # An open conflict: B's server copy changes under the device's held version.
        await b_admin(
            """mutation($id: ID!, $n: String!) { updateCustomer(id: $id, input: {lastName: $n}) {
               __typename } }""",
            {"id": customer["id"], "n": f"Server {canary}"},
        )
        pushed = await b_device.push(
            [b_device.change("customer", raw_id(customer["id"]), {"lastName": f"Phone {canary}"})]
        )
        [outcome] = pushed["results"]
        b_ids = {
            "customer": customer["id"],
            "contact": contact["id"],
            "tree_customer": tree["customer"],
            "tree_contact": tree["contact"],
            "facility": tree["facility"],
            "asset": tree["asset"],
            "credential": credential["id"],
            "device": b_device.id,
            **{f"user{i}": u["id"] for i, u in enumerate(users["users"])},
        }
        if outcome["outcome"] == "CONFLICT":
            b_ids["conflict"] = outcome["conflictId"]
        return World(
            url=live_server.url,
            canary=canary,
            a_admin=a.admin.token or "",
            a_tech=a_tech.token or "",
            a_device=a_device.id,
            a_tech_device=a_tech_device.id,
            a_customer=a_tree["customer"],
            b_admin=b_admin.token or "",
            b_ids=b_ids,
        )


def leaks(payload: Any, forbidden: list[str], sent: set[str]) -> list[str]:
    """String leaves of ``payload`` with a forbidden substring once A's own input is removed.

    A's input may be echoed back (`NotFound.id`, "<id> not found", "'<id>' is not a Customer
    id", a push result's record id): learning what you sent is not a leak, so every sent
    string and the uuid inside every sent global id are cut out of a leaf before the check.
    """
    echoes = sorted(sent | {raw for s in sent if (raw := _raw(s))}, key=len, reverse=True)
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            rest = value
            for echo in echoes:
                rest = rest.replace(echo, "")
            found.extend(f"{f!r} in {value!r}" for f in forbidden if f in rest)

    walk(payload)
    return found


def _raw(global_id: str) -> str | None:
    """The uuid inside a global id, or None."""
    try:
        return raw_id(global_id)
    except (ValueError, IndexError):
        return None


def operations(w: World) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """Random valid operations of tenant A, aimed at B's ids and canary text."""
    b = list(w.b_ids.values())
    b_raw = [raw_id(i) for i in b]
    any_id = st.sampled_from([*b, w.a_customer])
    text = st.one_of(
        st.just(w.canary), st.just(w.canary[:10]), st.just("zq"), st.just("%"), st.text(max_size=8)
    )
    maybe = lambda s: st.one_of(st.none(), s)  # noqa: E731
    first = st.integers(0, 50)
    device = st.sampled_from([w.a_device, w.a_tech_device, w.b_ids["device"]])
    lists = st.tuples(
        st.sampled_from(["contacts", "facilities", "assets", "credentials"]),
        first,
        maybe(any_id),
        maybe(text),
    ).map(
        lambda t: (
            f"""query($f: Int!, $c: ID, $s: String) {{ {t[0]}(first: $f, customerId: $c,
            search: $s) {{ totalCount edges {{ cursor node {{ {NODE_FIELDS} }} }} }} }}""",
            {"f": t[1], "c": t[2], "s": t[3]},
        )
    )
    customers = st.builds(
        lambda f, s, arch, email, order: (
            f"""query($f: Int!, $filter: CustomerFilter, $o: CustomerOrder) {{
            customers(first: $f, filter: $filter, orderBy: $o) {{ totalCount
            edges {{ cursor node {{ {CUSTOMER_FIELDS} }} }} }} }}""",
            {"f": f, "filter": {"search": s, "archived": arch, "email": email}, "o": order},
        ),
        first,
        maybe(text),
        st.sampled_from([None, True, False]),
        maybe(st.sampled_from([f"{w.canary}@example.com", "x@example.com"])),
        maybe(
            st.fixed_dictionaries(
                {
                    "field": st.sampled_from(["NAME", "CREATED_AT", "UPDATED_AT"]),
                    "direction": st.sampled_from(["ASC", "DESC"]),
                }
            )
        ),
    )
    reads = st.one_of(
        st.sampled_from(b).map(
            lambda i: (f"query($id: ID!) {{ node(id: $id) {{ {NODE_FIELDS} }} }}", {"id": i})
        ),
        st.sampled_from(b).map(
            lambda i: (
                f"query($id: ID!) {{ customer(id: $id) {{ {CUSTOMER_FIELDS} }} }}",
                {"id": i},
            )
        ),
        st.just((f"{{ users {{ {NODE_FIELDS} }} devices {{ id name }} }}", {})),
        st.tuples(st.booleans(), maybe(device)).map(
            lambda t: (
                """query($o: Boolean!, $d: ID) { conflicts(openOnly: $o, deviceId: $d) {
                   id entity recordId status fields { field serverValue clientValue } } }""",
                {"o": t[0], "d": t[1]},
            )
        ),
        st.just(
            (
                """{ credentialAccessReport(first: 50) { totalCount edges { node {
                   credentialName userEmail customerId } } } conflictPolicies { customer } }""",
                {},
            )
        ),
        device.map(
            lambda d: (
                """query($d: ID!) { pull(deviceId: $d) { checkpoint reset
                   changes { entity recordId customerId data } } syncState(deviceId: $d) { status } }""",
                {"d": d},
            )
        ),
    )
    writes = st.one_of(
        st.tuples(
            st.sampled_from(
                [
                    ("updateCustomer", "UpdateCustomerInput", "businessName"),
                    ("updateContact", "ContactFields", "firstName"),
                    ("updateFacility", "FacilityFields", "name"),
                    ("updateAsset", "AssetFields", "kind"),
                    ("updateCredential", "CredentialFields", "name"),
                ]
            ),
            st.sampled_from(b),
            st.text(min_size=1, max_size=8),
        ).map(
            lambda t: (
                f"""mutation($id: ID!, $in: {t[0][1]}!) {{ {t[0][0]}(id: $id, input: $in) {{
                {RESULT} ... on Node {{ id }} }} }}""",
                {"id": t[1], "in": {t[0][2]: t[2]}},
            )
        ),
        st.tuples(
            st.sampled_from(
                [
                    "archiveCustomer",
                    "reenableCustomer",
                    "deleteCustomer",
                    "deleteContact",
                    "deleteFacility",
                    "deleteAsset",
                    "deleteCredential",
                ]
            ),
            st.sampled_from(b),
        ).map(
            lambda t: (
                f"mutation($id: ID!) {{ {t[0]}(id: $id) {{ {RESULT} }} }}",
                {"id": t[1]},
            )
        ),
        st.tuples(st.sampled_from(b), maybe(device)).map(
            lambda t: (
                f"""mutation($id: ID!, $d: ID) {{ revealCredentialPassword(id: $id, deviceId: $d) {{
                {RESULT} ... on RevealedPassword {{ password }} }} }}""",
                {"id": t[0], "d": t[1]},
            )
        ),
        st.tuples(device, st.lists(st.sampled_from(b), max_size=3)).map(
            lambda t: (
                f"""mutation($d: ID!, $ids: [ID!]) {{ selectCustomers(deviceId: $d, mode: SELECTED,
                customerIds: $ids) {{ {RESULT} ... on Device {{ selectedCustomerIds }} }} }}""",
                {"d": t[0], "ids": t[1]},
            )
        ),
        st.sampled_from(b).map(
            lambda i: (
                f"""mutation($id: ID!) {{ resolveConflict(id: $id, resolution: KEEP_SERVER) {{
                {RESULT} ... on SyncConflict {{ id recordId }} }} }}""",
                {"id": i},
            )
        ),
        st.sampled_from(b).map(
            lambda i: (
                f"""mutation($id: ID!) {{ setUserActive(userId: $id, active: true) {{ {RESULT}
                ... on User {{ email }} }} }}""",
                {"id": i},
            )
        ),
        st.sampled_from(b).map(
            lambda i: (
                f"""mutation($c: ID!) {{ createContact(input: {{customerId: $c, firstName: "X"}})
                {{ {RESULT} ... on Contact {{ customer {{ displayName }} }} }} }}""",
                {"c": i},
            )
        ),
        st.tuples(
            device,
            st.sampled_from(b_raw),
            st.sampled_from(["customer", "contact", "facility", "asset"]),
            st.sampled_from(["UPSERT", "DELETE"]),
            st.integers(1, 10**6),
        ).map(
            lambda t: (
                """mutation($d: ID!, $changes: [ChangeInput!]!) { pushChanges(deviceId: $d,
                changes: $changes) { __typename ... on UserError { code message }
                ... on PushResult { results { recordId outcome version message conflictId
                conflicts { field serverValue clientValue } fieldErrors { field message } } } } }""",
                {
                    "d": t[0],
                    "changes": [
                        {
                            "clientMutationId": uuid.uuid4().hex,
                            "recordId": t[1],
                            "op": t[3],
                            "counter": t[4],
                            "patch": {t[2]: {}},
                        }
                    ],
                },
            )
        ),
    )
    return st.one_of(lists, customers, reads, writes)


def sent_values(variables: Any) -> set[str]:
    """Every string A sent (its own input may be echoed back)."""
    out: set[str] = set()
    if isinstance(variables, dict):
        for v in variables.values():
            out |= sent_values(v)
    elif isinstance(variables, list):
        for v in variables:
            out |= sent_values(v)
    elif isinstance(variables, str):
        out.add(variables)
    return out


class Subscriber(threading.Thread):
    """A's technician's `changes` subscription on its own event loop, collecting messages."""

    def __init__(self, w: World) -> None:
        super().__init__(daemon=True)
        self.w = w
        self.messages: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception as exc:  # noqa: BLE001 - the test asserts on self.error
            self.error = exc
            self.ready.set()

    async def _run(self) -> None:
        ws_url = self.w.url.replace("http://", "ws://", 1) + "/graphql"
        socket = await Socket.open(ws_url, self.w.a_tech)
        await socket.subscribe("1", self.w.a_tech_device)
        self.messages.append(await socket.recv())  # the catch-up page
        self.ready.set()
        while not self.stop.is_set():
            try:
                self.messages.append(await socket.recv(0.2))
            except TimeoutError:
                continue
        await socket.close()


def test_random_operations_of_tenant_a_never_see_tenant_b(world: World) -> None:
    """Random valid reads, writes, pulls, pushes and reveals of tenant A (admin and technician),
    many aimed at B's ids, and A's live subscription while B writes: no response or message
    contains B's canary string or any of B's ids."""
    w = world
    forbidden = w.forbidden()
    subscriber = Subscriber(w)
    subscriber.start()
    assert subscriber.ready.wait(20), "subscription did not start"
    assert subscriber.error is None, subscriber.error
    found: list[str] = []
    counts = {"requests": 0, "b_writes": 0}
    started = time.monotonic()
    http = httpx.Client(base_url=w.url, timeout=30)

    def post(token: str, query: str, variables: dict[str, Any]) -> httpx.Response:
        return http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )

    @given(op=operations(w), as_tech=st.booleans(), b_writes=st.booleans())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(op: tuple[str, dict[str, Any]], as_tech: bool, b_writes: bool) -> None:
        if time.monotonic() - started > TIME_BUDGET_SECONDS:
            return
        query, variables = op
        response = post(w.a_tech if as_tech else w.a_admin, query, variables)
        counts["requests"] += 1
        assert response.status_code < 500, response.text
        body = response.json()
        for leak in leaks(body, forbidden, sent_values(variables)):
            found.append(f"{query.split('(')[0][:60]} {variables}: {leak}")
        if b_writes:
            # B keeps writing canary text while A's subscription is open.
            counts["b_writes"] += 1
            response = post(
                w.b_admin,
                """mutation($id: ID!, $n: String!) { updateCustomer(id: $id,
                   input: {firstName: $n}) { __typename } }""",
                {"id": w.b_ids["customer"], "n": f"{w.canary} {counts['b_writes']}"},
            )
            assert response.status_code == 200, response.text

    # The detector works: B itself sees its canaries and ids in the same kind of response.
    own = post(
        w.b_admin, f"{{ customers(first: 50) {{ edges {{ node {{ {CUSTOMER_FIELDS} }} }} }} }}", {}
    )
    assert leaks(own.json(), forbidden, set()), own.text

    try:
        run()
        # A writes its own customer so the subscription has a live batch to deliver.
        post(
            w.a_admin,
            """mutation($id: ID!) { updateCustomer(id: $id, input: {businessName: "A live"}) {
               __typename } }""",
            {"id": w.a_customer},
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            "A live" in orjson.dumps(m).decode() for m in subscriber.messages
        ):
            time.sleep(0.1)
    finally:
        subscriber.stop.set()
        subscriber.join(10)
        http.close()
    assert subscriber.error is None, subscriber.error
    for message in subscriber.messages:
        found.extend(f"subscription: {leak}" for leak in leaks(message, forbidden, set()))
    print(
        f"\ncanary fuzz: {counts['requests']} operations of A, {counts['b_writes']} writes of B, "
        f"{len(subscriber.messages)} subscription messages, {len(found)} leaks, "
        f"{time.monotonic() - started:.1f}s"
    )
    assert any("A live" in orjson.dumps(m).decode() for m in subscriber.messages), (
        subscriber.messages[-3:]
    )
    assert counts["requests"] >= min(EXAMPLES, 20)
    assert not found, "\n".join(found[:20])
