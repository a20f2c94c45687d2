"""Convergence soak: many phones edit offline through the v2 contract and end equal to the server.

Each phone is a generic client with no per-entity glue: one store of records in sync
shape, an outbox, a checkpoint per feed. It pulls with one feed per record type run
concurrently (or one feed of all types), pushes one batch per record type concurrently
(counters arrive out of order), loses responses and resends them, and applies every change
and every push outcome the same way: the returned record replaces its local copy unless
the copy is newer; DELETE and EVICT remove it. Half the phones let the server resolve
conflicts (MANUAL policy: stored conflicts, settled by the admin or by the phone naming
the conflict in its next change), half resolve them themselves (client wins or server
wins, pushed against the returned version). Meanwhile an admin edits online, archives and
re-enables customers, phones change their selections, and tombstones are compacted past
every phone's checkpoint once, so feeds restart with a reset marker.

Invariants checked at the end: every phone holds exactly the server's records for its
selection (data and version); the server equals an oracle replay of every accepted write;
every field edited on both sides came back as a conflict exactly when the oracle says so;
every pushed change got an outcome; no conflict stays open that nobody resolves, and a
phone resolving its own never has one stored.

    python -m bench.convergence                    # 50 phones x 200 edits
    python -m bench.convergence --phones 20 --edits 50 --seed 7

It prints the counts and the time, and as the same-run baseline the time of the phones'
final catch-up pulls (the part of the run that writes nothing), for the ratio.
CI runs a smaller seeded case (tests/api/test_convergence.py).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

TYPES = ("CUSTOMER", "CONTACT", "FACILITY", "ASSET", "CREDENTIAL")
EDITABLE = {
    "contact": ("title", "notes", "firstName"),
    "asset": ("notes", "location", "model"),
    "customer": ("lastName",),
}
ONLINE_MUTATION = {"contact": "updateContact", "asset": "updateAsset", "customer": "updateCustomer"}
INPUT_TYPE = {"contact": "ContactFields", "asset": "AssetFields", "customer": "UpdateCustomerInput"}
CUSTOMERS = 6

CHANGE = "entity recordId customerId op version data"
REGISTER = """mutation($input: RegisterDeviceInput!) { registerDevice(input: $input) {
  __typename ... on Device { id replicaId resolvesConflicts } ... on UserError { message } } }"""
SELECT = """mutation($d: ID!, $mode: SelectionMode!, $ids: [ID!]) {
  selectCustomers(deviceId: $d, mode: $mode, customerIds: $ids) {
    __typename ... on UserError { code message } } }"""
PULL = f"""query($d: ID!, $since: String, $limit: Int!, $types: [SyncEntity!]) {{
  pull(deviceId: $d, since: $since, limit: $limit, types: $types) {{
    checkpoint hasMore reset changes {{ {CHANGE} }} }} }}"""
PUSH = f"""mutation($d: ID!, $changes: [ChangeInput!]!) {{
  pushChanges(deviceId: $d, changes: $changes) {{ __typename
    ... on PushResult {{ reregisterRequired results {{ clientMutationId recordId outcome
      conflictId conflicts {{ field serverValue clientValue }} fieldErrors {{ field message }}
      replayed record {{ {CHANGE} }} }} }}
    ... on UserError {{ code message }} }} }}"""
TREE = """mutation($name: String!) { createCustomer(input: {businessName: $name}) {
  __typename ... on Customer { recordId } } }"""
CONTACT = """mutation($c: ID!) { createContact(input: {customerId: $c, firstName: "Ann"}) {
  __typename ... on Contact { recordId } } }"""
FACILITY = """mutation($c: ID!) { createFacility(input: {customerId: $c, name: "HQ"}) {
  __typename ... on Facility { recordId } } }"""
ASSET = """mutation($f: ID!) { createAsset(input: {facilityId: $f, kind: "Fire door"}) {
  __typename ... on Asset { recordId } } }"""
OPEN_CONFLICTS = """query { conflicts(openOnly: true) { id entity recordId deviceId
  fields { field serverValue clientValue } } }"""
RESOLVE = """mutation($id: ID!, $r: ConflictResolution!) {
  resolveConflict(id: $id, resolution: $r) {
  __typename ... on UserError { message } } }"""
ARCHIVE = """mutation($id: ID!) { archiveCustomer(id: $id) { __typename } }"""
REENABLE = """mutation($id: ID!) { reenableCustomer(id: $id) { __typename } }"""
STATE = """query($d: ID!) { syncState(deviceId: $d) { status openConflicts } }"""

Key = tuple[str, str]
Api = Callable[..., Awaitable[dict[str, Any]]]


class Tenant(Protocol):
    """What the simulation needs of a tenant: its admin and a way to add technicians."""

    admin: Api

    async def add_user(self, role: str = "TECHNICIAN", **caps: bool) -> Api:
        """A signed-in user of the tenant."""
        ...


def covers(held: dict[str, int], other: dict[str, int]) -> bool:
    """``held`` has seen every write ``other`` has (version vectors)."""
    return all(held.get(replica, 0) >= n for replica, n in other.items())


@dataclass
class Oracle:
    """The server as a replay of accepted writes, one field at a time."""

    records: dict[Key, dict[str, Any]] = field(default_factory=dict)
    customer_of: dict[Key, str] = field(default_factory=dict)
    deleted: set[Key] = field(default_factory=set)
    archived: set[str] = field(default_factory=set)
    last_write: dict[tuple[Key, str], int] = field(default_factory=dict)
    count: int = 0

    def apply(self, key: Key, patch: dict[str, Any]) -> set[int]:
        """Apply accepted field values; returns the indexes of the writes that changed one."""
        written = set()
        record = self.records.setdefault(key, {})
        for name, value in patch.items():
            if name in record and record[name] == value:
                continue  # the write path keeps the field's dot when the value is unchanged
            self.count += 1
            record[name] = value
            self.last_write[(key, name)] = self.count
            written.add(self.count)
        return written

    def conflicts(self, key: Key, patch: dict[str, Any], seen: int, own: set[int]) -> set[str]:
        """Fields someone else wrote since the edit's base, to a different value."""
        return {
            name
            for name, value in patch.items()
            if (last := self.last_write.get((key, name))) is not None
            and last > seen
            and last not in own
            and self.records[key].get(name) != value
        }


@dataclass
class Edit:
    """Unpushed local edits of one record, with the base they were made from."""

    patch: dict[str, Any]
    base: dict[str, int] | None
    seen: int
    op: str = "UPSERT"
    resolves: str | None = None


@dataclass
class Sent:
    """One change of a batch in flight."""

    change: dict[str, Any]
    key: Key
    edit: Edit


@dataclass
class Phone:
    """A generic client: records in sync shape, an outbox, a checkpoint per feed."""

    api: Api
    name: str
    can_select: bool
    resolver: str
    per_type_feeds: bool
    id: str = ""
    replica: str = ""
    store: dict[Key, dict[str, Any]] = field(default_factory=dict)
    outbox: dict[Key, Edit] = field(default_factory=dict)
    in_flight: list[list[Sent]] = field(default_factory=list)
    checkpoints: dict[tuple[str, ...] | None, str | None] = field(default_factory=dict)
    counter: int = 0
    seen: dict[Key, int] = field(default_factory=dict)
    own: dict[Key, set[int]] = field(default_factory=dict)
    selection: list[str] | None = None

    def apply(self, change: dict[str, Any], seen: int) -> None:
        """Apply one change, pulled or returned by a push: the one rule of the client."""
        key = (change["entity"].lower(), change["recordId"])
        if change["op"] != "UPSERT":  # DELETE (gone for everyone) or EVICT (gone from here)
            self.store.pop(key, None)
            return
        held = self.store.get(key)
        if held is not None and covers(held["version"], change["version"]):
            return  # an older copy than the one held (a page read before a push committed)
        self.store[key] = change
        self.seen[key] = seen


@dataclass
class Figures:
    """What a run did."""

    outcomes: Counter[str] = field(default_factory=Counter)
    conflicts_surfaced: int = 0
    resolved_by_phone: int = 0
    resolved_by_admin: int = 0
    replays: int = 0
    resets: int = 0
    evictions: int = 0
    pushes: int = 0
    pulls: int = 0


class Simulation:
    """Phones, an admin and an oracle, driven by one seeded random generator."""

    def __init__(
        self,
        tenant: Tenant,
        rng: random.Random,
        *,
        phones: int,
        compact: Callable[[], Awaitable[None]],
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.tenant = tenant
        self.report = report
        self.rng = rng
        self.phone_count = phones
        self.compact = compact
        self.oracle = Oracle()
        self.phones: list[Phone] = []
        self.labels: dict[Key, str] = {}
        self.figures = Figures()
        # Stored conflicts: id -> (record, the phone's values of its held fields; None for
        # a delete).
        self.open_conflicts: dict[str, tuple[Key, dict[str, Any] | None]] = {}

    async def setup(self) -> None:
        """A few customer trees, technicians, and their phones, synced once."""
        admin = self.tenant.admin
        for i in range(CUSTOMERS):
            customer = await _created(admin, TREE, {"name": f"Shared {i}"}, "createCustomer")
            contact = await _created(admin, CONTACT, {"c": customer}, "createContact")
            facility = await _created(admin, FACILITY, {"c": customer}, "createFacility")
            asset = await _created(admin, ASSET, {"f": facility}, "createAsset")
            for entity, rid in (
                ("customer", customer),
                ("contact", contact),
                ("facility", facility),
                ("asset", asset),
            ):
                # Server ids are random: order records by creation so a seed replays exactly.
                self.labels[(entity, rid)] = f"{i:03d}-{entity}"
        users = [
            await self.tenant.add_user("TECHNICIAN", syncByCustomer=(i % 2 == 0)) for i in range(5)
        ]
        for i in range(self.phone_count):
            phone = Phone(
                api=users[i % len(users)],
                name=f"phone-{i}",
                can_select=(i % len(users)) % 2 == 0,
                resolver="CLIENT" if i % 2 else "SERVER",
                per_type_feeds=i % 3 != 0,
            )
            data = (
                await phone.api(
                    REGISTER, {"input": {"name": phone.name, "resolvesConflicts": phone.resolver}}
                )
            )["registerDevice"]
            assert data["__typename"] == "Device", data
            phone.id, phone.replica = data["id"], data["replicaId"]
            self.phones.append(phone)
        for key, change in (await self.server_state()).items():
            self.oracle.records[key] = dict(change["data"])
            self.oracle.customer_of[key] = change["customerId"]
        for phone in self.phones:
            if phone.can_select and self.rng.random() < 0.7:
                await self.select(phone)
            await self.pull(phone)

    async def server_state(self) -> dict[Key, dict[str, Any]]:
        """Every live record of the tenant, through a fresh ALL-mode device of the admin."""
        admin = self.tenant.admin
        device = (await admin(REGISTER, {"input": {"name": "observer"}}))["registerDevice"]["id"]
        state: dict[Key, dict[str, Any]] = {}
        since = None
        while True:
            page = (await admin(PULL, {"d": device, "since": since, "limit": 1000}))["pull"]
            for change in page["changes"]:
                key = (change["entity"].lower(), change["recordId"])
                if change["op"] == "UPSERT":
                    state[key] = change
                else:
                    state.pop(key, None)
            since = page["checkpoint"]
            if not page["hasMore"]:
                return state

    def customers(self) -> list[str]:
        """Live customers, in creation order."""
        return sorted(
            (
                k[1]
                for k in self.oracle.records
                if k[0] == "customer" and k not in self.oracle.deleted
            ),
            key=lambda c: self.labels[("customer", c)],
        )

    async def select(self, phone: Phone) -> None:
        """The technician picks customers (or goes back to all)."""
        if self.rng.random() < 0.25:
            phone.selection = None
            variables: dict[str, Any] = {"d": phone.id, "mode": "ALL", "ids": None}
        else:
            customers = self.customers()
            phone.selection = self.rng.sample(customers, self.rng.randint(1, len(customers)))
            variables = {"d": phone.id, "mode": "SELECTED", "ids": phone.selection}
        result = (await phone.api(SELECT, variables))["selectCustomers"]
        assert result["__typename"] == "Device", result

    async def pull(self, phone: Phone) -> None:
        """Every feed of the phone until it has no more; per-type feeds run concurrently."""
        feeds: list[tuple[str, ...] | None] = (
            [(t,) for t in TYPES] if phone.per_type_feeds else [None]
        )
        await asyncio.gather(*(self.pull_feed(phone, feed) for feed in feeds))

    async def pull_feed(self, phone: Phone, feed: tuple[str, ...] | None) -> None:
        while True:
            self.figures.pulls += 1
            variables = {
                "d": phone.id,
                "since": phone.checkpoints.get(feed),
                "limit": 7,
                "types": list(feed) if feed else None,
            }
            page = (await phone.api(PULL, variables))["pull"]
            if page["reset"]:
                # The feed starts over: drop what it delivered, then apply the page.
                self.figures.resets += 1
                types = {t.lower() for t in (feed or TYPES)}
                for key in [k for k in phone.store if k[0] in types]:
                    del phone.store[key]
            for change in page["changes"]:
                self.figures.evictions += change["op"] == "EVICT"
                phone.apply(change, self.oracle.count)
            phone.checkpoints[feed] = page["checkpoint"]
            if not page["hasMore"]:
                return

    def edit(self, phone: Phone) -> None:
        """One offline edit: a field, a new asset, or a delete, coalesced in the outbox."""
        keys = {k for k in phone.store if k[0] in EDITABLE} | {
            k for k, e in phone.outbox.items() if e.op == "UPSERT" and k[0] in EDITABLE
        }
        if not keys:
            return
        key = self.rng.choice(sorted(keys, key=self.labels.__getitem__))
        roll = self.rng.random()
        held = phone.store.get(key)
        if roll < 0.06 and key[0] == "asset" and held is not None:
            phone.outbox[key] = Edit({}, held["version"], phone.seen.get(key, 0), op="DELETE")
            return
        if roll < 0.12:
            facilities = sorted(
                (k for k in phone.store if k[0] == "facility"), key=self.labels.__getitem__
            )
            if facilities:
                facility = self.rng.choice(facilities)
                new_key = ("asset", str(uuid.UUID(int=self.rng.getrandbits(128), version=4)))
                self.labels[new_key] = f"new-{new_key[1]}"
                phone.outbox[new_key] = Edit(
                    {"kind": "Gate", "notes": f"new by {phone.name}", "facilityId": facility[1]},
                    None,
                    0,
                )
                return
        name = self.rng.choice(EDITABLE[key[0]])
        value = f"{phone.name}:{self.rng.randint(0, 3)}"
        pending = phone.outbox.get(key)
        if pending is None:
            phone.outbox[key] = Edit(
                {name: value}, held["version"] if held else None, phone.seen.get(key, 0)
            )
        elif pending.op == "UPSERT":
            pending.patch[name] = value

    def batches(self, phone: Phone) -> list[list[Sent]]:
        """The outbox as one batch per record type, numbered in one sequence."""
        by_type: dict[str, list[Sent]] = {}
        for key, edit in sorted(phone.outbox.items(), key=lambda kv: self.labels[kv[0]]):
            phone.counter += 1
            change = {
                "clientMutationId": uuid.uuid4().hex,
                "recordId": key[1],
                "op": edit.op,
                "baseVersion": edit.base,
                "counter": phone.counter,
                "patch": {key[0]: edit.patch},
            }
            if edit.resolves:
                change["resolvesConflictId"] = edit.resolves
            by_type.setdefault(key[0], []).append(Sent(change, key, edit))
        phone.outbox.clear()
        return list(by_type.values())

    async def push(self, phone: Phone) -> None:
        """Resend what never got an answer, else send the outbox; batches run concurrently."""
        resend = bool(phone.in_flight)
        batches = phone.in_flight if resend else self.batches(phone)
        if not batches:
            return
        self.figures.pushes += len(batches)
        answers = await asyncio.gather(
            *(phone.api(PUSH, {"d": phone.id, "changes": [s.change for s in b]}) for b in batches)
        )
        lost: list[list[Sent]] = []
        for batch, answer in zip(batches, answers, strict=True):
            result = answer["pushChanges"]
            assert result["__typename"] == "PushResult", result
            assert not result["reregisterRequired"], result
            assert len(result["results"]) == len(batch)
            for sent, outcome in zip(batch, result["results"], strict=True):
                assert outcome["clientMutationId"] == sent.change["clientMutationId"]
                if resend:
                    assert outcome["replayed"], outcome
                    self.figures.replays += 1
                else:
                    self.judge(phone, sent, outcome)
            if not resend and self.rng.random() < 0.15:
                lost.append(batch)  # the answer never reached the phone
                continue
            for sent, outcome in zip(batch, result["results"], strict=True):
                self.receive(phone, sent, outcome)
        phone.in_flight = lost

    def judge(self, phone: Phone, sent: Sent, outcome: dict[str, Any]) -> None:
        """Check one outcome against the oracle at the moment the server committed it."""
        key, edit, kind = sent.key, sent.edit, outcome["outcome"]
        self.figures.outcomes[kind] += 1
        own = phone.own.setdefault(key, set())
        customer = self.oracle.customer_of.get(key) or self.oracle.customer_of.get(
            ("facility", edit.patch.get("facilityId", ""))
        )
        if customer in self.oracle.archived:
            assert kind == "FORBIDDEN", (key, outcome)
            assert outcome["record"] is None or outcome["record"]["op"] != "UPSERT", outcome
            return
        if key in self.oracle.deleted:
            assert kind == "DELETED", (key, outcome)
            return
        if edit.op == "DELETE":
            others = {
                name
                for name in self.oracle.records[key]
                if (last := self.oracle.last_write.get((key, name))) is not None
                and last > edit.seen
                and last not in own
            }
            if kind == "APPLIED":
                assert not others, (key, outcome, others)
                self.oracle.deleted.add(key)
            else:
                assert kind == "CONFLICT", (key, outcome, others)
                assert others, (key, outcome)
                self.figures.conflicts_surfaced += 1
                if outcome["conflictId"]:
                    self.open_conflicts[outcome["conflictId"]] = (key, None)
            return
        if edit.base is None and key not in self.oracle.records:
            assert kind == "APPLIED", (key, outcome)
            self.oracle.customer_of[key] = customer
            own |= self.oracle.apply(key, dict(edit.patch))
            return
        if edit.resolves:
            self.open_conflicts.pop(edit.resolves, None)
            self.figures.resolved_by_phone += 1
        held = self.oracle.conflicts(key, edit.patch, edit.seen, own)
        if held:
            assert kind == "CONFLICT", (key, edit, outcome, held)
            assert {c["field"] for c in outcome["conflicts"]} == held, (key, outcome, held)
            self.figures.conflicts_surfaced += 1
            stored = outcome["conflictId"]
            assert (stored is not None) == (phone.resolver == "SERVER"), outcome
            if stored:
                self.open_conflicts[stored] = (key, {n: edit.patch[n] for n in held})
            # Only the fields changed on both sides wait: the rest is written now.
            own |= self.oracle.apply(key, {n: v for n, v in edit.patch.items() if n not in held})
            return
        assert kind in ("APPLIED", "MERGED"), (key, edit, outcome)
        own |= self.oracle.apply(key, dict(edit.patch))

    def receive(self, phone: Phone, sent: Sent, outcome: dict[str, Any]) -> None:
        """What the phone does with an answer it got: apply the record, maybe resolve."""
        if outcome["record"] is not None:
            phone.apply(outcome["record"], self.oracle.count)
        if outcome["outcome"] != "CONFLICT" or sent.edit.op != "UPSERT":
            return
        held = {c["field"]: c["clientValue"] for c in outcome["conflicts"]}
        copy = phone.store.get(sent.key)
        if copy is None or sent.key in phone.outbox:
            return  # evicted (no longer synced here), or edited again meanwhile
        base, seen = copy["version"], phone.seen.get(sent.key, 0)
        if phone.resolver == "CLIENT":
            # The phone decides: its own values win half the time, else it keeps the server's.
            if self.rng.random() < 0.5:
                phone.outbox[sent.key] = Edit(held, base, seen)
        elif self.rng.random() < 0.3:
            # Settled on the phone and pushed naming the stored conflict, which closes it.
            phone.outbox[sent.key] = Edit(held, base, seen, resolves=outcome["conflictId"])

    async def online_edit(self) -> None:
        """An admin edits a field online (last writer wins)."""
        keys = [
            k
            for k in self.oracle.records
            if k[0] in EDITABLE
            and k not in self.oracle.deleted
            and self.oracle.customer_of[k] not in self.oracle.archived
        ]
        key = self.rng.choice(sorted(keys, key=self.labels.__getitem__))
        name = self.rng.choice(EDITABLE[key[0]])
        value = f"admin:{self.rng.randint(0, 3)}"
        mutation = ONLINE_MUTATION[key[0]]
        data = await self.tenant.admin(
            f"mutation($id: ID!, $input: {INPUT_TYPE[key[0]]}!)"
            f" {{ {mutation}(id: $id, input: $input) {{ __typename }} }}",
            {"id": key[1], "input": {name: value}},
        )
        assert data[mutation]["__typename"] in ("Customer", "Contact", "Asset"), data
        self.oracle.apply(key, {name: value})

    async def archive_or_reenable(self) -> None:
        """An admin archives a customer (evicted everywhere) or re-enables one."""
        if self.oracle.archived and self.rng.random() < 0.6:
            customer = self.rng.choice(sorted(self.oracle.archived))
            data = await self.tenant.admin(REENABLE, {"id": customer})
            assert data["reenableCustomer"]["__typename"] == "Customer", data
            self.oracle.archived.discard(customer)
        else:
            customer = self.rng.choice(self.customers())
            data = await self.tenant.admin(ARCHIVE, {"id": customer})
            assert data["archiveCustomer"]["__typename"] == "Customer", data
            self.oracle.archived.add(customer)

    def live_conflicts(self) -> set[str]:
        """Stored conflicts still open whose record lives (a deleted record's are moot)."""
        return {c for c, (key, _) in self.open_conflicts.items() if key not in self.oracle.deleted}

    async def admin_resolves(self, count: int | None = None) -> None:
        """The admin settles stored conflicts: keep the server's values or the phone's."""
        for conflict in (await self.tenant.admin(OPEN_CONFLICTS))["conflicts"][:count]:
            known = self.open_conflicts.pop(conflict["id"], None)
            assert known is not None, conflict  # no conflict the simulation did not see
            key, values = known
            if key in self.oracle.deleted:
                continue  # deleted by a resolution earlier in this listing: moot now
            resolution = self.rng.choice(["KEEP_SERVER", "KEEP_CLIENT"])
            data = await self.tenant.admin(RESOLVE, {"id": conflict["id"], "r": resolution})
            assert data["resolveConflict"]["__typename"] == "SyncConflict", data
            self.figures.resolved_by_admin += 1
            if resolution == "KEEP_CLIENT" and values is None:
                self.oracle.deleted.add(key)
            elif resolution == "KEEP_CLIENT":
                self.oracle.apply(key, values)

    async def run(self, edits_per_phone: int) -> None:
        """Random steps until every phone made its edits, then everyone settles."""
        edits = {p.name: 0 for p in self.phones}
        total = edits_per_phone * len(self.phones)
        compacted = False
        while any(n < edits_per_phone for n in edits.values()):
            phone = self.rng.choice(self.phones)
            roll = self.rng.random()
            if roll < 0.70 and edits[phone.name] < edits_per_phone:
                self.edit(phone)
                edits[phone.name] += 1
            elif roll < 0.82:
                await self.push(phone)
            elif roll < 0.92:
                await self.pull(phone)
            elif roll < 0.955:
                await self.online_edit()
            elif roll < 0.965:
                await self.archive_or_reenable()
            elif roll < 0.975:
                await self.admin_resolves(1)
            elif phone.can_select:
                await self.select(phone)
            done = sum(edits.values())
            if self.report and done and done % max(total // 10, 1) == 0 and roll < 0.70:
                self.report(f"{done}/{total} edits, {self.figures.pushes} pushes")
            if not compacted and done >= total * 0.6:
                # Every phone's checkpoint falls behind the horizon: feeds restart with reset.
                compacted = True
                await self.compact()
        for customer in sorted(self.oracle.archived):
            await self.tenant.admin(REENABLE, {"id": customer})
        self.oracle.archived.clear()

    async def settle(self) -> float:
        """Push and pull until quiet, settle open conflicts; returns the last pull round's time."""
        for _ in range(10):
            for phone in self.phones:
                while phone.in_flight or phone.outbox:
                    await self.push(phone)
            await self.admin_resolves()
            for phone in self.phones:
                await self.pull(phone)
            if not any(p.outbox for p in self.phones) and not self.live_conflicts():
                break
        started = time.perf_counter()
        for phone in self.phones:
            await self.pull(phone)
        return time.perf_counter() - started

    async def check(self) -> None:
        """The invariants of the module docstring."""
        server = await self.server_state()
        live = {k for k in self.oracle.records if k not in self.oracle.deleted}
        assert set(server) == live, set(server) ^ live
        for key, change in server.items():
            for name, value in self.oracle.records[key].items():
                assert change["data"].get(name) == value, (key, name, change["data"], value)
        assert not self.live_conflicts(), self.live_conflicts()
        assert not (await self.tenant.admin(OPEN_CONFLICTS))["conflicts"]
        for phone in self.phones:
            visible = {
                k: v
                for k, v in server.items()
                if phone.selection is None or v["customerId"] in phone.selection
            }
            assert set(phone.store) == set(visible), [
                (phone.name, k, phone.store.get(k), server.get(k), phone.selection)
                for k in set(phone.store) ^ set(visible)
            ]
            for key, change in visible.items():
                assert phone.store[key]["data"] == change["data"], (phone.name, key)
                assert phone.store[key]["version"] == change["version"], (phone.name, key)
            state = (await phone.api(STATE, {"d": phone.id}))["syncState"]
            assert state["openConflicts"] == 0, (phone.name, state)
            assert state["status"] == "SYNCED", (phone.name, state)
        assert self.figures.conflicts_surfaced > 0
        assert self.figures.replays > 0
        assert self.figures.evictions > 0
        assert self.figures.resets > 0


async def _created(api: Api, document: str, variables: dict[str, Any], name: str) -> str:
    result = (await api(document, variables))[name]
    assert "recordId" in result, result
    return str(result["recordId"])


async def simulate(
    tenant: Tenant,
    *,
    phones: int,
    edits: int,
    seed: int,
    compact: Callable[[], Awaitable[None]],
    report: Callable[[str], None] | None = None,
) -> tuple[Simulation, float, float]:
    """Run one seeded simulation and check it; returns it, its time and the baseline time."""
    rng = random.Random(seed)  # a reproducible simulation, not a secret
    sim = Simulation(tenant, rng, phones=phones, compact=compact, report=report)
    started = time.perf_counter()
    await sim.setup()
    await sim.run(edits)
    baseline = await sim.settle()
    elapsed = time.perf_counter() - started
    await sim.check()
    return sim, elapsed, baseline


async def _bench(url: str, phones: int, edits: int, seed: int) -> None:
    from datetime import timedelta

    import httpx

    from bench import common
    from db.compaction import compact

    database = common.app_database(url)
    org_id, admin_email = await common.bench_tenant(database)
    try:
        with common.running_server(url, workers=1) as server:
            limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
            async with httpx.AsyncClient(
                base_url=server.url, timeout=httpx.Timeout(300), limits=limits
            ) as client:
                admin = await common.Api(client).login(admin_email, common.PASSWORD)

                class BenchTenant:
                    def __init__(self) -> None:
                        self.admin = admin

                    async def add_user(self, role: str = "TECHNICIAN", **caps: bool) -> Api:
                        email = f"{role.lower()}-{uuid.uuid4().hex[:8]}@example.com"
                        data = await admin(
                            """mutation($input: CreateUserInput!) { createUser(input: $input) {
                              __typename ... on UserError { message } } }""",
                            {
                                "input": {
                                    "email": email,
                                    "name": "Tech",
                                    "password": common.PASSWORD,
                                    "role": role,
                                    "capabilities": caps or None,
                                }
                            },
                        )
                        assert data["createUser"]["__typename"] == "User", data
                        return await common.Api(client).login(email, common.PASSWORD)

                async def compact_now() -> None:
                    async with database.tenant(org_id) as conn:
                        await compact(conn, org_id, device_ttl=timedelta(0))

                sim, elapsed, baseline = await simulate(
                    BenchTenant(),
                    phones=phones,
                    edits=edits,
                    seed=seed,
                    compact=compact_now,
                    report=common.log,
                )
    finally:
        await database.close()
    f = sim.figures
    changes = sum(f.outcomes.values())
    print(f"machine: {common.machine()}")
    print(
        f"convergence: {phones} phones x {edits} edits, seed {seed}:"
        " converged, every invariant held"
    )
    print(f"  changes pushed: {changes} in {f.pushes} batches; outcomes: {dict(f.outcomes)}")
    print(
        f"  conflicts surfaced: {f.conflicts_surfaced}; resolved by phones {f.resolved_by_phone},"
        f" by the admin {f.resolved_by_admin}; replays {f.replays}; pulls {f.pulls};"
        f" evictions applied {f.evictions}; feed resets {f.resets}"
    )
    print(
        f"  run: {elapsed:.1f} s; baseline (the phones' final catch-up pulls, same run):"
        f" {baseline:.2f} s; ratio {elapsed / baseline:.0f}x"
    )


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--phones", type=int, default=50)
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261206)
    args = parser.parse_args()
    from bench.common import bench_database

    with bench_database() as url:
        asyncio.run(_bench(url, args.phones, args.edits, args.seed))


if __name__ == "__main__":
    main()
