"""A small mobile client for tests: local store, outbox, checkpoint, over the real API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

REGISTER = """mutation($input: RegisterDeviceInput!) { registerDevice(input: $input) {
  __typename ... on Device { id replicaId selectionMode } ... on UserError { message } } }"""

SELECT = """mutation($d: ID!, $mode: SelectionMode!, $ids: [ID!]) {
  selectCustomers(deviceId: $d, mode: $mode, customerIds: $ids) {
    __typename ... on Device { selectionMode selectedCustomerIds } ... on UserError { code message } } }"""

PULL = """query($d: ID!, $since: String, $limit: Int!, $types: [SyncEntity!]) {
  pull(deviceId: $d, since: $since, limit: $limit, types: $types) {
  checkpoint hasMore reset
  changes { entity recordId customerId op version data } } }"""

PUSH = """mutation($d: ID!, $changes: [ChangeInput!]!) { pushChanges(deviceId: $d, changes: $changes) {
  __typename
  ... on PushResult { reregisterRequired results { clientMutationId entity recordId outcome version conflictId
      conflicts { field serverValue clientValue } fieldErrors { field message } message replayed } }
  ... on UserError { code message } } }"""

STATE = """query($d: ID!) { syncState(deviceId: $d) { status checkpoint headCheckpoint lag pendingChanges
  openConflicts lastPullAt } }"""


@dataclass
class Device:
    """A simulated phone: what it holds, what it has not pushed, where it is in the stream."""

    api: Any
    id: str = ""
    replica: str = ""
    store: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    checkpoint: str | None = None
    # Checkpoints of per-type feeds, by their sorted types (the all-types feed: `checkpoint`).
    feeds: dict[tuple[str, ...], str | None] = field(default_factory=dict)
    counter: int = 0

    async def register(self) -> Device:
        data = await self.api(REGISTER, {"input": {"name": "phone", "platform": "test"}})
        assert data["registerDevice"]["__typename"] == "Device", data
        self.id = data["registerDevice"]["id"]
        self.replica = data["registerDevice"]["replicaId"]
        return self

    async def select(self, mode: str, ids: list[str] | None = None) -> dict[str, Any]:
        return (await self.api(SELECT, {"d": self.id, "mode": mode, "ids": ids}))["selectCustomers"]

    async def pull_page(self, limit: int = 500, types: list[str] | None = None) -> dict[str, Any]:
        """One page of the feed of ``types`` (None: all), applied to the store."""
        feed = None if types is None else tuple(sorted(types))
        since = self.checkpoint if feed is None else self.feeds.get(feed)
        variables = {"d": self.id, "since": since, "limit": limit, "types": types}
        page = (await self.api(PULL, variables))["pull"]
        self.apply(page, types)
        if feed is None:
            self.checkpoint = page["checkpoint"]
        else:
            self.feeds[feed] = page["checkpoint"]
        return page

    def apply(self, page: dict[str, Any], types: list[str] | None = None) -> None:
        """Apply a pull page or subscription batch of the feed of ``types`` to the store."""
        if page["reset"]:
            dropped = None if types is None else {t.lower() for t in types}
            for key in [k for k in self.store if dropped is None or k[0] in dropped]:
                del self.store[key]
        for change in page["changes"]:
            key = (change["entity"].lower(), change["recordId"])
            if change["op"] in ("DELETE", "EVICT"):
                self.store.pop(key, None)
            else:
                self.store[key] = {
                    "data": change["data"],
                    "version": change["version"],
                    "customerId": change["customerId"],
                }

    async def sync(self, limit: int = 500, types: list[str] | None = None) -> int:
        """Pull the feed of ``types`` until there is no more; returns the number of pages."""
        pages = 0
        while True:
            pages += 1
            page = await self.pull_page(limit, types)
            if not page["hasMore"]:
                return pages

    def change(
        self,
        entity: str,
        record_id: str,
        patch: dict[str, Any] | None,
        *,
        op: str = "UPSERT",
        base: dict[str, int] | str | None = "local",
    ) -> dict[str, Any]:
        """A ChangeInput editing from the local copy (base='local') or a given base."""
        self.counter += 1
        if base == "local":
            held = self.store.get((entity, record_id))
            base = held["version"] if held else None
        return {
            "clientMutationId": uuid.uuid4().hex,
            "recordId": record_id,
            "op": op,
            "baseVersion": base,
            "counter": self.counter,
            "patch": {entity: patch or {}},
        }

    async def push(self, changes: list[dict[str, Any]]) -> dict[str, Any]:
        return (await self.api(PUSH, {"d": self.id, "changes": changes}))["pushChanges"]

    async def state(self) -> dict[str, Any]:
        return (await self.api(STATE, {"d": self.id}))["syncState"]

    def customers(self) -> set[str]:
        return {rid for (entity, rid) in self.store if entity == "customer"}
