// The RxDB helpers: a schema per record type from the generated sync shape, and the conflict
// handler (the server's record is the resolution; equality ignores RxDB's own metadata).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRxDatabase } from "rxdb";
import { getRxStorageMemory } from "rxdb/plugins/storage-memory";
import { SYNC_FIELDS, SyncEntityValues } from "../dist/index.js";
import { fieldsyncConflictHandler, fieldsyncSchema } from "../dist/rxdb.js";

test("every record type gets an RxDB schema RxDB accepts, with every data key", async () => {
  const db = await createRxDatabase({ name: `schema${Date.now()}`, storage: getRxStorageMemory() });
  const collections = Object.fromEntries(SyncEntityValues.map((e) => [e.toLowerCase(), { schema: fieldsyncSchema(e) }]));
  await db.addCollections(collections);
  for (const e of SyncEntityValues) {
    const schema = fieldsyncSchema(e);
    for (const key of Object.keys(SYNC_FIELDS[e])) assert.ok(key in schema.properties, `${e}.${key}`);
  }
  const asset = { id: "a1", customerId: "c1", version: { server: 1 }, facilityId: "f1", kind: "Door", manufacturer: null, model: null,
    serialNumber: null, installDate: null, location: null, notes: null, customFields: { inspected: true } };
  await db.asset.insert(asset);
  assert.deepEqual((await db.asset.findOne("a1").exec()).customFields, { inspected: true });
  await db.remove();
});

test("the conflict handler takes the server's record and ignores RxDB metadata", async () => {
  const server = { id: "a", version: { server: 2 }, notes: "server", location: "roof", _deleted: false };
  const local = { id: "a", version: { server: 1 }, notes: "mine", location: "roof", _deleted: false, _meta: { lwt: 1 }, _rev: "1-x" };
  assert.equal(fieldsyncConflictHandler.isEqual(server, local), false);
  assert.equal(fieldsyncConflictHandler.isEqual(server, { ...server, _meta: { lwt: 2 }, _rev: "2-y" }), true);
  assert.equal(fieldsyncConflictHandler.isEqual(server, { ...server, _deleted: true }), false);
  assert.deepEqual(await fieldsyncConflictHandler.resolve({ realMasterState: server, newDocumentState: local }), server);
});
