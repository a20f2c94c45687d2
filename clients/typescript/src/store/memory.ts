import type { Entity, OutboxEntry, StoredRecord } from "../types.js";
import { Mutex, type StoreTx, type SyncStore } from "./types.js";

const clone = <T>(v: T): T => (v === undefined ? v : structuredClone(v));

/** An in-memory store (tests, web workers without persistence, ephemeral sessions). */
export class MemoryStore implements SyncStore {
  private records = new Map<string, StoredRecord>();
  private meta = new Map<string, unknown>();
  private outbox = new Map<string, OutboxEntry>();
  private mutex = new Mutex();

  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.mutex.run(async () => {
      // Undo log: restore every touched key on failure.
      const undo: Array<() => void> = [];
      const remember = <V>(map: Map<string, V>, key: string) => {
        const had = map.has(key);
        const old = map.get(key);
        undo.push(() => (had ? map.set(key, old as V) : map.delete(key)));
      };
      const key = (entity: Entity, id: string) => `${entity}:${id}`;
      const tx: StoreTx = {
        getRecord: async (entity, id) => clone(this.records.get(key(entity, id))),
        putRecord: async (r) => {
          remember(this.records, key(r.entity, r.recordId));
          this.records.set(key(r.entity, r.recordId), clone(r));
        },
        deleteRecord: async (entity, id) => {
          remember(this.records, key(entity, id));
          this.records.delete(key(entity, id));
        },
        deleteRecordsOf: async (entities) => {
          for (const [k, r] of this.records) {
            if (entities.includes(r.entity)) {
              remember(this.records, k);
              this.records.delete(k);
            }
          }
        },
        listRecords: async (entity) =>
          [...this.records.values()].filter((r) => r.entity === entity).map(clone),
        getMeta: async <V>(k: string) => clone(this.meta.get(k)) as V | undefined,
        setMeta: async (k, v) => {
          remember(this.meta, k);
          this.meta.set(k, clone(v));
        },
        listOutbox: async () =>
          [...this.outbox.values()].sort((a, b) => a.counter - b.counter).map(clone),
        putOutbox: async (e) => {
          remember(this.outbox, e.clientMutationId);
          this.outbox.set(e.clientMutationId, clone(e));
        },
        deleteOutbox: async (id) => {
          remember(this.outbox, id);
          this.outbox.delete(id);
        },
      };
      try {
        return await fn(tx);
      } catch (error) {
        for (const u of undo.reverse()) u();
        throw error;
      }
    });
  }

  async close(): Promise<void> {}
}
