// Two real clients against a real server (FIELDSYNC_URL, admin token in FIELDSYNC_TOKEN):
// one on SQLite (node:sqlite, the SERVER conflict resolver), one in memory (the CLIENT
// resolver). They register, select customers, pull per-type feeds, edit offline, push
// concurrently, hit conflicts, lose a response, restart with a full outbox, get evicted,
// receive live changes across a network drop, and end equal to the server.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { dirname } from "node:path";
import { FieldsyncClient, MemoryStore, SqliteStore, nodeSqliteDriver } from "../dist/index.js";
import {
  URL_, TOKEN, admin, assertEqualToServer, log, lossyFetch, seedCustomer, startProxy, waitFor,
} from "./harness.mjs";

const results = [];
async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push({ name, ok: true, ms: Date.now() - started });
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    console.log(`not ok - ${name}`);
    console.error(error);
    throw error;
  }
}

const HERE = dirname(fileURLToPath(import.meta.url));
const FAST = { baseMs: 50, maxMs: 500 };
const proxy = await startProxy(URL_);
const dir = mkdtempSync(join(tmpdir(), "fieldsync-client-"));
const sqlitePath = join(dir, "phone-1.sqlite");
const fetch1 = lossyFetch();
const fetch2 = lossyFetch();
const openPhone1 = () =>
  FieldsyncClient.open({
    url: proxy.url, token: TOKEN, fetch: fetch1, backoff: FAST, maxAttempts: 3,
    store: new SqliteStore(nodeSqliteDriver(new DatabaseSync(sqlitePath))),
    device: { name: "phone 1", platform: "node", appVersion: "test", resolvesConflicts: "SERVER" },
  });
const conflictsSeen2 = [];
const phone2 = await FieldsyncClient.open({
  url: proxy.url, token: TOKEN, fetch: fetch2, backoff: FAST, maxAttempts: 3,
  store: new MemoryStore(),
  device: { name: "phone 2", platform: "node", appVersion: "test", resolvesConflicts: "CLIENT" },
  // The app's hook: keep its own value for `location`, the server's for anything else.
  onConflict: (c) => {
    conflictsSeen2.push(c);
    return c.conflicts.some((f) => f.field === "location") ? { values: { location: c.patch.location } } : undefined;
  },
});
let phone1 = await openPhone1();
let A, B, C, D;
let requiredField;

try {
  await step("seed: four customers with facilities, assets, contacts; a credential", async () => {
    [A, B, C, D] = await Promise.all(["Acme", "Bolt", "Crane", "Dyna"].map(seedCustomer));
    await admin.createCredential({ customerId: A.id, name: "gate code", username: "u", password: "s3cret" });
  });

  await step("register and select customers", async () => {
    await phone1.register();
    await phone2.register();
    assert.notEqual(phone1.status.deviceId, phone2.status.deviceId);
    await phone1.selectCustomers("SELECTED", [A.id, B.id]);
    await phone2.selectCustomers("SELECTED", [A.id, C.id, D.id]);
  });

  await step("initial sync through per-type feeds equals the server for the selection", async () => {
    await Promise.all([phone1.pull(), phone2.pull()]);
    const n1 = await assertEqualToServer(phone1, "SELECTED", [A.id, B.id], "phone 1 initial");
    const n2 = await assertEqualToServer(phone2, "SELECTED", [A.id, C.id, D.id], "phone 2 initial");
    assert.equal(n1, 2 * 5 + 1, "two customers of five records each, and a credential");
    assert.equal(n2, 3 * 5 + 1);
    for (const t of ["CUSTOMER", "CONTACT", "FACILITY", "ASSET", "CREDENTIAL"]) assert.ok(phone1.status.lastPullAt[t], t);
    const roundTrip = await phone1.get("CUSTOMER", A.id);
    assert.equal(roundTrip.data.businessName, "Acme");
  });

  await step("a pulled record sent back whole as a patch, one field changed, is accepted (every type)", async () => {
    const picks = [["CUSTOMER", B.id, "lastName"], ["CONTACT", B.contact, "title"], ["FACILITY", B.facility, "notes"], ["ASSET", B.assets[1], "model"]];
    for (const [entity, id, field] of picks) {
      const { data } = await phone1.get(entity, id);
      await phone1.update(entity, id, { ...data, [field]: `whole ${entity}` });
    }
    const summary = await phone1.push();
    assert.deepEqual(summary.outcomes, { APPLIED: 4 }, JSON.stringify(phone1.status.refusals));
    for (const [entity, id, field] of picks) assert.equal((await phone1.get(entity, id)).data[field], `whole ${entity}`);
    await phone2.pull();
  });

  await step("offline edits on both phones, a conflict each way, pushed concurrently", async () => {
    proxy.offline = true;
    proxy.drop();
    const [a1, a2] = A.assets;
    // Phone 1 (SERVER resolver): edits asset a1 and a2; creates an asset; edits customer B.
    await phone1.update("ASSET", a1, { notes: "phone 1 notes", model: "P1" });
    await phone1.update("ASSET", a2, { serialNumber: "P1-SERIAL", location: "roof" });
    var created = await phone1.create("ASSET", { facilityId: B.facility, kind: "Hydrant", serialNumber: "NEW-1" });
    await phone1.update("CUSTOMER", B.id, { phones: [{ type: "MOBILE", number: "+1 555 0100" }], customFields: {} });
    // Phone 2 (CLIENT resolver): edits the same a1 field differently, and a2's location.
    await phone2.update("ASSET", a1, { notes: "phone 2 notes", kind: "Fire door" });
    await phone2.update("ASSET", a2, { location: "basement" });
    // Meanwhile an online admin changes a2's serial number: phone 1's serial conflicts.
    await admin.updateAsset(a2, { serialNumber: "ADMIN-SERIAL" });
    assert.equal(phone1.status.pendingChanges, 4);
    assert.equal(phone2.status.pendingChanges, 2);
    await assert.rejects(phone1.push(), /failed after 3 tries/);
    assert.equal(phone1.status.connection, "offline");
    assert.ok(phone1.status.lastError, "the failure shows");

    proxy.offline = false;
    // Phone 1 first, then phone 2 while phone 1 still syncs: both finish, in any order.
    const p1 = phone1.sync();
    await new Promise((r) => setTimeout(r, 30));
    await Promise.all([p1, phone2.sync()]);
    await phone1.pull();
    assert.equal(phone1.status.pendingChanges, 0);
    assert.equal(phone2.status.pendingChanges, 0);
    assert.equal(phone1.status.lastError, null);

    // Phone 1's serial conflict: MANUAL policy stores it on the server; the phone shows the
    // server's serial, keeps its non-conflicting `location`, and reports the conflict.
    const c1 = phone1.status.conflicts.find((c) => c.recordId === a2);
    assert.ok(c1, "phone 1 reported the conflict");
    assert.deepEqual(c1.conflicts.map((c) => c.field), ["serialNumber"]);
    assert.ok(c1.conflictId, "stored on the server (SERVER resolver)");
    const open1 = await admin.openConflicts(phone1.status.deviceId);
    assert.equal(open1.length, 1);
    const a2on1 = await phone1.get("ASSET", a2);
    assert.equal(a2on1.data.serialNumber, "ADMIN-SERIAL");
    // Phone 2 pushed `location` after phone 1 had written `roof` (whichever came first, the
    // other one conflicts on location; phone 2's hook keeps its own value).
    const a2now = await phone2.get("ASSET", a2);
    const a1now = await phone2.get("ASSET", a1);
    assert.equal(a1now.data.kind, "Fire door", "phone 2's non-conflicting edit is kept");
    assert.ok(["phone 1 notes", "phone 2 notes"].includes(a1now.data.notes));
    const c2 = phone2.status.conflicts;
    assert.ok(c2.length >= 1, "phone 2 reported its conflicts");
    assert.ok(c2.every((c) => c.conflictId === null), "CLIENT resolver: nothing stored on the server");
    if (c2.some((c) => c.recordId === a2)) assert.equal(a2now.data.location, "basement", "the hook kept the client's location");
    assert.equal((await admin.openConflicts(phone2.status.deviceId)).length, 0);
    assert.ok(await phone1.get("ASSET", created), "the created asset is there");
    await assertEqualToServer(phone1, "SELECTED", [A.id, B.id], "phone 1 after the push");
    await phone2.pull();
    await assertEqualToServer(phone2, "SELECTED", [A.id, C.id, D.id], "phone 2 after the push");
  });

  await step("a response lost after the server committed: the resend is a replay", async () => {
    await phone2.update("CUSTOMER", C.id, { lastName: "Lost-Response" });
    fetch2.state.loseNext = "pushChanges";
    const summary = await phone2.push();
    assert.equal(fetch2.state.lost, 1);
    assert.equal(summary.replayed, 1, "the second send was answered from the receipt");
    assert.deepEqual(summary.outcomes, { APPLIED: 1 });
    assert.equal((await phone2.get("CUSTOMER", C.id)).data.lastName, "Lost-Response");
  });

  await step("a restart with a full outbox mid-push: same clientMutationIds, no duplicates", async () => {
    await phone1.pull();
    await phone1.close();
    // Another process opens the same SQLite file, fills the outbox, pushes, and is killed
    // (SIGKILL) the moment the server's answer arrives: committed there, never applied here.
    const child = await new Promise((resolve) => {
      const p = spawn(process.execPath, [join(HERE, "crash-mid-push.mjs"), sqlitePath, A.id, B.assets[0]], {
        env: { ...process.env, FIELDSYNC_URL: proxy.url },
      });
      let stdout = "", stderr = "";
      p.stdout.on("data", (d) => (stdout += d));
      p.stderr.on("data", (d) => (stderr += d));
      const timer = setTimeout(() => p.kill("SIGTERM"), 60_000);
      p.on("close", (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
    });
    assert.equal(child.signal, "SIGKILL", child.stderr);
    const before = JSON.parse(child.stdout.trim().split("\n").at(-1));
    assert.equal(before.length, 41);
    phone1 = await openPhone1();
    const after = (await phone1.outbox()).map((e) => `${e.clientMutationId}/${e.counter}`);
    assert.deepEqual(after, before, "the outbox came back from SQLite unchanged");
    assert.ok((await phone1.outbox()).every((e) => e.state === "sent"));
    const summary = await phone1.push();
    assert.equal(summary.replayed, 41, "every change was a replay: nothing written twice");
    await phone1.pull();
    const crew = (await phone1.list("CONTACT")).filter((c) => c.data.firstName?.startsWith("Crew "));
    assert.equal(crew.length, 40);
    assert.equal((await phone1.get("ASSET", B.assets[0])).data.notes, "before restart");
    await assertEqualToServer(phone1, "SELECTED", [A.id, B.id], "phone 1 after the restart");
  });

  await step("a field made required while offline: refused once, fixed, pushed as a new change", async () => {
    const refusals = [];
    phone2.on("refusal", (r) => refusals.push(r));
    await phone2.update("ASSET", C.assets[0], { notes: "inspected today" });
    const key = `inspected_${Math.random().toString(36).slice(2, 8)}`;
    requiredField = await admin.createCustomField({ entityType: "ASSET", key, label: "Inspected", fieldType: "CHECKBOX", required: true });
    await phone2.push();
    await phone2.push();
    assert.equal(refusals.length, 1, "surfaced once");
    assert.equal(refusals[0].outcome, "VALIDATION_FAILED");
    assert.ok(refusals[0].fieldErrors.some((f) => f.field === `customFields.${key}`), JSON.stringify(refusals[0].fieldErrors));
    assert.equal(phone2.status.pendingChanges, 0, "not retried");
    await phone2.update("ASSET", C.assets[0], { ...refusals[0].patch, customFields: { [key]: true } });
    const s = await phone2.push();
    assert.deepEqual(s.outcomes, { APPLIED: 1 });
    await phone2.dismiss(refusals[0].id);
    assert.equal(phone2.status.refusals.length, 0);
    await admin.updateCustomField(requiredField.id, { required: false });
  });

  await step("a record deleted elsewhere: the offline edit is reported DELETED, the copy goes", async () => {
    const refusals = [];
    phone1.on("refusal", (r) => refusals.push(r));
    await phone1.update("CONTACT", A.contact, { title: "Manager" });
    await admin.deleteContact(A.contact);
    await phone1.push();
    assert.equal(refusals.length, 1);
    assert.equal(refusals[0].outcome, "DELETED");
    assert.equal(await phone1.get("CONTACT", A.contact), null);
  });

  await step("unselecting a customer evicts its records", async () => {
    await phone1.selectCustomers("SELECTED", [A.id]);
    await phone1.pull();
    assert.equal(await phone1.get("CUSTOMER", B.id), null);
    assert.equal((await phone1.list("ASSET")).filter((a) => a.customerId === B.id).length, 0);
    await assertEqualToServer(phone1, "SELECTED", [A.id], "phone 1 after unselecting B");
  });

  await step("the live subscription delivers, survives a network drop, and applies evictions", async () => {
    await phone2.startLive();
    await waitFor(() => phone2.status.connection === "online", "socket up");
    await admin.updateCustomer(C.id, { firstName: "Live-1" });
    await waitFor(async () => (await phone2.get("CUSTOMER", C.id))?.data.firstName === "Live-1", "live change");
    // Drop the network: the socket dies; a change happens while it is down.
    proxy.offline = true;
    proxy.drop();
    await waitFor(() => phone2.status.connection !== "online", "socket down");
    await admin.updateCustomer(C.id, { firstName: "Live-2" });
    await admin.updateAsset(D.assets[1], { notes: "while offline" });
    proxy.offline = false;
    await waitFor(async () => (await phone2.get("CUSTOMER", C.id))?.data.firstName === "Live-2", "resumed after the drop");
    await waitFor(async () => (await phone2.get("ASSET", D.assets[1]))?.data.notes === "while offline", "asset feed resumed");
    // A local edit while live is pushed at once.
    await phone2.update("ASSET", D.assets[0], { location: "live edit" });
    await waitFor(() => phone2.status.pendingChanges === 0 && !phone2.status.pushing, "live push");
    // Unselect D while live: its records leave through the feeds.
    await phone2.selectCustomers("SELECTED", [A.id, C.id]);
    await waitFor(async () => (await phone2.get("CUSTOMER", D.id)) === null, "live eviction");
    await waitFor(async () => (await phone2.list("ASSET")).every((a) => a.customerId !== D.id), "live eviction of assets");
    await phone2.stopLive();
  });

  await step("both phones end equal to the server", async () => {
    await Promise.all([phone1.sync(), phone2.sync()]);
    const n1 = await assertEqualToServer(phone1, "SELECTED", [A.id], "phone 1 final");
    const n2 = await assertEqualToServer(phone2, "SELECTED", [A.id, C.id], "phone 2 final");
    assert.equal(phone1.status.pendingChanges + phone2.status.pendingChanges, 0);
    const state = await phone1.serverState();
    log("phone 1 server state", state, n1, n2);
  });
  console.log(JSON.stringify({ ok: true, steps: results }));
} finally {
  await phone1.close().catch(() => undefined);
  await phone2.close().catch(() => undefined);
  await proxy.close();
}
