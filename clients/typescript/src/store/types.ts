import type { Entity, OutboxEntry, StoredRecord } from "../types.js";

/** What the sync engine needs from local storage; every call runs inside a transaction. */
export interface StoreTx {
  getRecord(entity: Entity, recordId: string): Promise<StoredRecord | undefined>;
  putRecord(record: StoredRecord): Promise<void>;
  deleteRecord(entity: Entity, recordId: string): Promise<void>;
  /** Drop every record of these types (a feed reset). */
  deleteRecordsOf(entities: readonly Entity[]): Promise<void>;
  listRecords(entity: Entity): Promise<StoredRecord[]>;
  getMeta<T = unknown>(key: string): Promise<T | undefined>;
  setMeta(key: string, value: unknown): Promise<void>;
  /** The outbox in counter order. */
  listOutbox(): Promise<OutboxEntry[]>;
  putOutbox(entry: OutboxEntry): Promise<void>;
  deleteOutbox(clientMutationId: string): Promise<void>;
}

/** A local store: transactions run one at a time and are all-or-nothing. */
export interface SyncStore {
  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** Runs async jobs one after another. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(job: () => Promise<T>): Promise<T> {
    const next = this.tail.then(job, job);
    this.tail = next.catch(() => undefined);
    return next;
  }
}
