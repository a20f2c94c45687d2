// The store contract, run on both adapters: in-memory and SQLite (Node 22's node:sqlite).
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { MemoryStore, SqliteStore, nodeSqliteDriver } from "../dist/index.js";

const adapters = {
  memory: () => new MemoryStore(),
  sqlite: () => new SqliteStore(nodeSqliteDriver(new DatabaseSync(":memory:"))),
};

const rec = (id, data = { name: id }) => ({
  entity: "FACILITY", recordId: id, customerId: "c1", version: { server: 1 }, server: data, data,
});
const entry = (id, counter) => ({
  clientMutationId: id, entity: "ASSET", recordId: "a1", op: "UPSERT", patch: { notes: id },
  baseVersion: null, counter, state: "pending", resolvesConflictId: null, createdAt: "", attempts: 0,
});

for (const [name, make] of Object.entries(adapters)) {
  describe(`${name} store`, () => {
    test("records, meta and outbox round-trip", async () => {
      const store = make();
      await store.transaction(async (tx) => {
        await tx.putRecord(rec("f1"));
        await tx.putRecord(rec("f2"));
        await tx.putRecord({ ...rec("x"), entity: "ASSET" });
        await tx.setMeta("checkpoint:ASSET", "abc");
        await tx.putOutbox(entry("m2", 2));
        await tx.putOutbox(entry("m1", 1));
      });
      await store.transaction(async (tx) => {
        assert.deepEqual(await tx.getRecord("FACILITY", "f1"), rec("f1"));
        assert.equal(await tx.getRecord("FACILITY", "nope"), undefined);
        assert.deepEqual((await tx.listRecords("FACILITY")).map((r) => r.recordId).sort(), ["f1", "f2"]);
        assert.equal(await tx.getMeta("checkpoint:ASSET"), "abc");
        assert.deepEqual((await tx.listOutbox()).map((e) => e.clientMutationId), ["m1", "m2"]);
        await tx.deleteRecordsOf(["FACILITY"]);
        await tx.deleteOutbox("m1");
      });
      await store.transaction(async (tx) => {
        assert.deepEqual(await tx.listRecords("FACILITY"), []);
        assert.equal((await tx.listRecords("ASSET")).length, 1);
        assert.deepEqual((await tx.listOutbox()).map((e) => e.clientMutationId), ["m2"]);
      });
    });

    test("a failed transaction leaves nothing behind", async () => {
      const store = make();
      await store.transaction((tx) => tx.putRecord(rec("keep")));
      await assert.rejects(
        store.transaction(async (tx) => {
          await tx.putRecord(rec("f1"));
          await tx.deleteRecord("FACILITY", "keep");
          await tx.setMeta("k", 1);
          await tx.putOutbox(entry("m", 1));
          throw new Error("boom");
        }),
        /boom/,
      );
      await store.transaction(async (tx) => {
        assert.deepEqual((await tx.listRecords("FACILITY")).map((r) => r.recordId), ["keep"]);
        assert.equal(await tx.getMeta("k"), undefined);
        assert.deepEqual(await tx.listOutbox(), []);
      });
    });

    test("transactions run one at a time", async () => {
      const store = make();
      await store.transaction((tx) => tx.setMeta("n", 0));
      await Promise.all(
        Array.from({ length: 20 }, () =>
          store.transaction(async (tx) => {
            const n = await tx.getMeta("n");
            await new Promise((r) => setTimeout(r, 1));
            await tx.setMeta("n", n + 1);
          }),
        ),
      );
      assert.equal(await store.transaction((tx) => tx.getMeta("n")), 20);
    });
  });
}

test("the SQLite store persists across reopening the file", async () => {
  const path = join(mkdtempSync(join(tmpdir(), "fs-store-")), "db.sqlite");
  const a = new SqliteStore(nodeSqliteDriver(new DatabaseSync(path)));
  await a.transaction(async (tx) => {
    await tx.putRecord(rec("f1"));
    await tx.putOutbox(entry("m1", 1));
  });
  const b = new SqliteStore(nodeSqliteDriver(new DatabaseSync(path)));
  await b.transaction(async (tx) => {
    assert.deepEqual(await tx.getRecord("FACILITY", "f1"), rec("f1"));
    assert.equal((await tx.listOutbox())[0].clientMutationId, "m1");
  });
});
