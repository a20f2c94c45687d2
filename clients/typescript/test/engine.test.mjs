// The sync engine against an in-process fake server: outbox, outcomes, conflicts, refusals, feeds.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { FieldsyncClient, MemoryStore, SqliteStore, nodeSqliteDriver } from "../dist/index.js";
import { createFakeServer } from "./fake-server.mjs";

const FAST = { baseMs: 1, maxMs: 2 };
async function open(server, extra = {}) {
  return FieldsyncClient.open({
    url: "http://fake", token: "t", fetch: server.fetch, store: extra.store ?? new MemoryStore(),
    backoff: FAST, maxAttempts: 2, ...extra,
  });
}
const ASSET = (over = {}) => ({ customerId: "c1", facilityId: "f1", kind: "Door", manufacturer: null, model: null,
  serialNumber: "S1", installDate: null, location: null, notes: null, customFields: {}, ...over });

async function seeded(extra) {
  const server = createFakeServer();
  server.serverWrite("ASSET", "a1", "c1", ASSET());
  server.serverWrite("ASSET", "a2", "c1", ASSET({ serialNumber: "S2" }));
  const client = await open(server, extra);
  await client.pull();
  return { server, client };
}

test("pull fills the store per type and stores each feed's checkpoint", async () => {
  const { server, client } = await seeded();
  assert.deepEqual((await client.list("ASSET")).map((r) => r.recordId).sort(), ["a1", "a2"]);
  assert.ok(client.status.lastPullAt.ASSET && client.status.lastPullAt.CUSTOMER);
  server.serverWrite("ASSET", "a1", "c1", { notes: "n" });
  server.serverWrite("ASSET", "a2", "c1", {}, true); // deleted elsewhere
  await client.pull(["ASSET"]);
  assert.equal((await client.get("ASSET", "a1")).data.notes, "n");
  assert.equal(await client.get("ASSET", "a2"), null);
});

test("a reset drops the feed's records but keeps edits waiting in the outbox", async () => {
  const { server, client } = await seeded();
  await client.update("ASSET", "a1", { notes: "mine" });
  server.state.records.delete("a2");
  server.state.log = server.state.log.filter((e) => e.recordId !== "a2");
  server.hooks.resetNext = true;
  await client.pull(["ASSET"]);
  assert.deepEqual((await client.list("ASSET")).map((r) => r.recordId), ["a1"]);
  assert.equal((await client.get("ASSET", "a1")).data.notes, "mine");
  assert.equal((await client.get("ASSET", "a1")).data.serialNumber, "S1");
});

test("edits coalesce into one change per record, and the pushed record is stored", async () => {
  const { server, client } = await seeded();
  await client.update("ASSET", "a1", { notes: "one" });
  await client.update("ASSET", "a1", { location: "hall", customFields: { color: "red" } });
  await client.update("ASSET", "a1", { customFields: { size: 2 } });
  const outbox = await client.outbox();
  assert.equal(outbox.length, 1);
  assert.deepEqual(outbox[0].patch, { notes: "one", location: "hall", customFields: { color: "red", size: 2 } });
  assert.equal(client.status.pendingChanges, 1);
  const summary = await client.push();
  assert.deepEqual(summary.outcomes, { APPLIED: 1 });
  const a1 = await client.get("ASSET", "a1");
  assert.equal(a1.pending, false);
  assert.deepEqual(a1.data, server.state.records.get("a1").data);
  assert.deepEqual(a1.version, server.state.records.get("a1").version);
  assert.equal(client.status.pendingChanges, 0);
  assert.ok(client.status.lastPushAt.ASSET);
});

test("the outbox survives a restart mid-push: same clientMutationIds and counters, nothing applied twice", async () => {
  const path = join(mkdtempSync(join(tmpdir(), "fs-outbox-")), "phone.sqlite");
  const server = createFakeServer();
  server.serverWrite("ASSET", "a1", "c1", ASSET());
  const first = await open(server, { store: new SqliteStore(nodeSqliteDriver(new DatabaseSync(path))), maxAttempts: 1 });
  await first.pull();
  await first.update("ASSET", "a1", { notes: "edited" });
  const created = await first.create("CUSTOMER", { businessName: "New Co" });
  const before = (await first.outbox()).map((e) => [e.clientMutationId, e.counter]);
  server.hooks.loseResponse = 1; // the server commits, the phone never hears back
  await assert.rejects(first.push(), /response lost/);
  assert.equal(first.status.pendingChanges, 2);
  const writesAfterFirst = server.state.log.length;
  await first.close(); // the app is killed

  const second = await open(server, { store: new SqliteStore(nodeSqliteDriver(new DatabaseSync(path))) });
  assert.equal(second.status.pendingChanges, 2, "the outbox was persisted");
  assert.deepEqual((await second.outbox()).map((e) => [e.clientMutationId, e.counter]), before);
  assert.ok((await second.outbox()).every((e) => e.state === "sent"));
  const summary = await second.push();
  assert.deepEqual(summary.outcomes, { APPLIED: 2 });
  assert.equal(server.state.pushes.length, 2);
  assert.deepEqual(server.state.pushes[1].map((c) => [c.clientMutationId, c.counter]), before, "resent as is");
  assert.equal(server.state.log.length, writesAfterFirst, "the resend wrote nothing (replayed)");
  assert.equal((await second.get("ASSET", "a1")).data.notes, "edited");
  assert.equal((await second.get("CUSTOMER", created)).data.businessName, "New Co");
  assert.equal(second.status.pendingChanges, 0);
  await second.close();
});

test("a conflict keeps the server's value of the conflicting field only, and is reported", async () => {
  const { server, client } = await seeded();
  server.serverWrite("ASSET", "a1", "c1", { notes: "server notes" }); // not pulled yet
  server.hooks.decide = (c) => c.patch.asset.notes
    ? { outcome: "CONFLICT", conflictId: "k1", conflicts: [{ field: "notes", serverValue: "server notes", clientValue: c.patch.asset.notes }] }
    : undefined;
  const seen = [];
  client.on("conflict", (c) => seen.push(c));
  await client.update("ASSET", "a1", { notes: "my notes", location: "roof" });
  await client.push();
  const a1 = await client.get("ASSET", "a1");
  assert.equal(a1.data.notes, "server notes", "conflicting field: the server's value");
  assert.equal(a1.data.location, "roof", "non-conflicting field: the edit is kept");
  assert.equal(seen.length, 1);
  assert.equal(seen[0].resolution, "KEEP_SERVER");
  assert.equal(seen[0].conflictId, "k1");
  assert.deepEqual(client.status.conflicts.map((c) => c.recordId), ["a1"]);
  assert.equal((await client.outbox()).length, 0, "nothing pushed again by default");
  await client.dismiss(seen[0].id);
  assert.equal(client.status.conflicts.length, 0);
});

test("a conflict hook may keep the client's values: only the conflicting fields go again, from the server's version", async () => {
  const { server, client } = await seeded({
    onConflict: () => ({ keep: "client" }),
  });
  let first = true;
  server.hooks.decide = (c) => {
    if (!first) return undefined;
    first = false;
    return { outcome: "CONFLICT", conflictId: "k9", conflicts: [{ field: "notes", serverValue: "s", clientValue: "mine" }] };
  };
  await client.update("ASSET", "a1", { notes: "mine", location: "roof" });
  await client.push();
  const [again] = server.state.pushes.slice(-1)[0];
  assert.deepEqual(again.patch, { asset: { notes: "mine" } });
  assert.equal(again.resolvesConflictId, "k9");
  assert.deepEqual(again.baseVersion, server.state.receipts.get(server.state.pushes[0][0].clientMutationId).version);
  assert.equal((await client.get("ASSET", "a1")).data.notes, "mine");
  assert.equal(client.status.conflicts[0].resolution, "KEEP_CLIENT");
});

test("a non-conflicting edit the server did not write is pushed again, never dropped", async () => {
  const { server, client } = await seeded();
  let first = true;
  server.hooks.decide = () => {
    if (!first) return undefined;
    first = false;
    // A misbehaving server: it holds `location` too, though only `notes` conflicts.
    return { outcome: "CONFLICT", hold: ["notes", "location"], conflicts: [{ field: "notes", serverValue: null, clientValue: "x" }] };
  };
  await client.update("ASSET", "a1", { notes: "x", location: "roof", model: "M1" });
  await client.push();
  const last = server.state.pushes.slice(-1)[0][0];
  assert.deepEqual(last.patch, { asset: { location: "roof" } });
  assert.equal((await client.get("ASSET", "a1")).data.location, "roof");
  assert.equal((await client.get("ASSET", "a1")).data.model, "M1");
  assert.equal((await client.get("ASSET", "a1")).data.notes, null, "the conflicting field keeps the server's value");
});

test("a refusal is surfaced once and never retried", async () => {
  const { server, client } = await seeded();
  server.hooks.decide = (c) => c.patch.asset.serialNumber === "" ? {
    outcome: "VALIDATION_FAILED", fieldErrors: [{ field: "customFields.inspected", message: "is required" }], message: "invalid",
  } : undefined;
  const refusals = [];
  client.on("refusal", (r) => refusals.push(r));
  await client.update("ASSET", "a1", { serialNumber: "" });
  await client.update("ASSET", "a2", { notes: "fine" });
  await client.push();
  await client.push();
  await client.sync();
  assert.equal(refusals.length, 1);
  assert.equal(refusals[0].outcome, "VALIDATION_FAILED");
  assert.deepEqual(refusals[0].patch, { serialNumber: "" });
  assert.equal(refusals[0].fieldErrors[0].field, "customFields.inspected");
  assert.equal(server.state.pushes.length, 1, "the refused change was sent once");
  assert.equal((await client.get("ASSET", "a1")).data.serialNumber, "S1", "the store shows the server's record");
  assert.equal((await client.get("ASSET", "a2")).data.notes, "fine", "the rest of the batch applied");
  assert.equal(client.status.refusals.length, 1);
  assert.equal(client.status.pendingChanges, 0);
});

test("NOT_TRIED changes are pushed again as they are", async () => {
  const { server, client } = await seeded();
  let left = 1;
  server.hooks.decide = () => (left-- > 0 ? { outcome: "NOT_TRIED" } : undefined);
  await client.update("ASSET", "a1", { notes: "later" });
  const summary = await client.push();
  assert.deepEqual(summary.outcomes, { NOT_TRIED: 1, APPLIED: 1 });
  assert.equal(server.state.pushes[0][0].clientMutationId, server.state.pushes[1][0].clientMutationId);
  assert.equal(server.state.pushes[0][0].counter, server.state.pushes[1][0].counter);
});

test("an edit of a record deleted elsewhere is reported as DELETED and the copy goes", async () => {
  const { server, client } = await seeded();
  server.serverWrite("ASSET", "a1", "c1", {}, true);
  const refusals = [];
  client.on("refusal", (r) => refusals.push(r));
  await client.update("ASSET", "a1", { notes: "too late" });
  await client.push();
  assert.equal(refusals.length, 1);
  assert.equal(refusals[0].outcome, "DELETED");
  assert.equal(await client.get("ASSET", "a1"), null);
});

test("a page older than a record the push returned does not take it back", async () => {
  const { server, client } = await seeded();
  await client.update("ASSET", "a1", { notes: "new" });
  await client.push();
  const version = (await client.get("ASSET", "a1")).version;
  // Replay an old page (as a slow pull started before the push would deliver it).
  const { store } = client;
  await store.transaction(async (tx) => tx.setMeta("checkpoint:ASSET", "0"));
  server.state.log.push({ seq: ++server.state.seq, recordId: "a1" });
  await client.pull(["ASSET"]);
  assert.deepEqual((await client.get("ASSET", "a1")).version, version);
  assert.equal((await client.get("ASSET", "a1")).data.notes, "new");
});

test("create then delete before any push sends nothing", async () => {
  const { server, client } = await seeded();
  const id = await client.create("ASSET", { facilityId: "f1", customerId: "c1", kind: "Gate" });
  assert.equal((await client.get("ASSET", id)).data.kind, "Gate");
  await client.delete("ASSET", id);
  assert.equal(await client.get("ASSET", id), null);
  await client.push();
  assert.equal(server.state.pushes.length, 0);
});

test("status is observable", async () => {
  const { client } = await seeded();
  const seen = [];
  const stop = client.onStatus((s) => seen.push(s.pendingChanges));
  await client.update("ASSET", "a1", { notes: "x" });
  await client.push();
  stop();
  assert.equal(seen[0], 0);
  assert.ok(seen.includes(1));
  assert.equal(seen.at(-1), 0);
});

test("reregisterRequired: the client registers anew, renumbers its outbox from 1 and pushes again", async () => {
  const { server, client } = await seeded();
  const firstDevice = client.status.deviceId;
  await client.update("ASSET", "a1", { notes: "restored" });
  await client.update("ASSET", "a2", { notes: "restored too" });
  server.hooks.reregister = true;
  const summary = await client.push();
  assert.equal(server.state.registrations, 2);
  assert.notEqual(client.status.deviceId, firstDevice);
  const resent = server.state.pushes.at(-1);
  assert.deepEqual(resent.map((c) => c.counter), [1, 2]);
  assert.equal(summary.outcomes.APPLIED, 2);
  assert.equal(client.status.refusals.length, 0, "counter refusals under re-registration are not final");
  assert.equal((await client.get("ASSET", "a1")).data.notes, "restored");
});
