// Runs the README's RxDB example verbatim against a real server (through a TCP proxy that can
// drop the network), then checks: the collections equal the server, the live stream delivers,
// local edits replicate, a conflict keeps the server's value only for the conflicting field,
// a network drop is survived, and everything ends equal to the server.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { SYNC_FIELDS } from "../dist/index.js";
import { URL_, admin, only, seedCustomer, serverView, startProxy, waitFor } from "./harness.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const readme = readFileSync(join(HERE, "..", "README.md"), "utf8");
const match = readme.match(/<!-- rxdb-example -->\s*```js\n([\s\S]*?)```/);
assert.ok(match, "README has the RxDB example");
const example = match[1];
const lines = example.trim().split("\n").length;
assert.ok(lines <= 20, `the example is ${lines} lines`);

const A = await seedCustomer("RxAcme");
const B = await seedCustomer("RxBolt");
const proxy = await startProxy(URL_);
process.env.FIELDSYNC_URL = proxy.url;
mkdirSync(join(HERE, ".generated"), { recursive: true });
const file = join(HERE, ".generated", "readme-rxdb-example.mjs");
writeFileSync(file, `${example}\nexport { db, sync };\n`);
const { db, sync } = await import(file);

async function collectionView() {
  const view = new Map();
  for (const [entity, collection] of [["CUSTOMER", db.customers], ["ASSET", db.assets]]) {
    for (const doc of await collection.find().exec()) {
      const json = doc.toJSON();
      const data = Object.fromEntries(Object.keys(SYNC_FIELDS[entity]).map((k) => [k, json[k]]));
      view.set(`${entity}:${json.id}`, { customerId: json.customerId, version: json.version, data });
    }
  }
  return view;
}
async function assertEqualToServer(label) {
  await sync.awaitInSync();
  const theirs = only(await serverView("ALL"), ["CUSTOMER", "ASSET"]);
  const mine = await collectionView();
  assert.deepEqual([...mine.keys()].sort(), [...theirs.keys()].sort(), `${label}: same documents`);
  for (const [k, v] of theirs) assert.deepEqual(mine.get(k), v, `${label}: ${k}`);
  return theirs.size;
}
const steps = [];
const step = async (name, fn) => {
  const t = Date.now();
  await fn();
  steps.push({ name, ms: Date.now() - t });
  console.log(`ok - ${name} (${Date.now() - t} ms)`);
};

try {
  await step("initial replication equals the server", async () => {
    assert.equal(await assertEqualToServer("initial"), 2 + 4);
  });
  await step("the live stream delivers a server change", async () => {
    await admin.updateCustomer(A.id, { firstName: "Live" });
    await waitFor(async () => (await db.customers.findOne(A.id).exec())?.firstName === "Live", "live customer");
  });
  await step("a local edit replicates to the server", async () => {
    const asset = await db.assets.findOne(A.assets[0]).exec();
    await asset.incrementalPatch({ notes: "from RxDB", customFields: {} });
    await sync.awaitInSync();
    await waitFor(async () => (await serverView("ALL")).get(`ASSET:${A.assets[0]}`).data.notes === "from RxDB", "pushed");
  });
  await step("a created document replicates, with its links", async () => {
    await db.assets.insert({ id: crypto.randomUUID(), customerId: B.id, facilityId: B.facility, kind: "Hydrant", manufacturer: null,
      model: null, serialNumber: "RX-1", installDate: null, location: null, notes: null, customFields: {}, version: {} });
    await assertEqualToServer("after create");
  });
  await step("offline: a conflict keeps the server's value of the conflicting field only", async () => {
    proxy.offline = true;
    proxy.drop();
    const id = B.assets[1];
    await admin.updateAsset(id, { serialNumber: "ADMIN" });
    const asset = await db.assets.findOne(id).exec();
    await asset.incrementalPatch({ serialNumber: "DEVICE", location: "roof" });
    proxy.offline = false;
    await waitFor(async () => {
      const server = (await serverView("ALL")).get(`ASSET:${id}`).data;
      return server.location === "roof";
    }, "the non-conflicting edit reached the server", 20_000);
    await sync.awaitInSync();
    const local = await db.assets.findOne(id).exec();
    assert.equal(local.location, "roof", "the non-conflicting edit is kept");
    if (sync.conflicts.length) {
      assert.deepEqual(sync.conflicts[0].conflicts.map((c) => c.field), ["serialNumber"]);
      await waitFor(async () => (await db.assets.findOne(id).exec()).serialNumber === "ADMIN", "server's serial");
    }
  });
  await step("everything ends equal to the server", async () => {
    await admin.updateAsset(A.assets[1], { notes: "last" });
    await waitFor(async () => (await db.assets.findOne(A.assets[1]).exec())?.notes === "last", "live after the drop", 20_000);
    await assertEqualToServer("final");
  });
  console.log(JSON.stringify({ ok: true, exampleLines: lines, conflicts: sync.conflicts.length, steps }));
} finally {
  await sync.cancel();
  await db.remove?.();
  await proxy.close();
}
