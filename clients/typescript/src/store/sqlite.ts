import type { Entity, OutboxEntry, StoredRecord } from "../types.js";
import { Mutex, type StoreTx, type SyncStore } from "./types.js";

/**
 * The minimal SQLite driver the store needs. `node:sqlite`, expo-sqlite, op-sqlite and
 * wa-sqlite all fit in a few lines (see `nodeSqliteDriver`); either sync or async returns work.
 */
export interface SqliteDriver {
  /** Run a statement (parameters by position, `?`). */
  exec(sql: string, params?: readonly SqlValue[]): void | Promise<void>;
  /** Run a query and return its rows as objects. */
  query<R = Record<string, SqlValue>>(sql: string, params?: readonly SqlValue[]): R[] | Promise<R[]>;
}
export type SqlValue = string | number | null;

/** The subset of node:sqlite's `DatabaseSync` the driver uses. */
interface NodeSqliteDatabase {
  exec(sql: string): void;
  prepare(sql: string): {
    run(...params: SqlValue[]): unknown;
    all(...params: SqlValue[]): unknown[];
  };
}

/** A driver over Node 22's `node:sqlite` (`new DatabaseSync(path)`), with prepared statements cached. */
export function nodeSqliteDriver(db: NodeSqliteDatabase): SqliteDriver {
  const statements = new Map<string, ReturnType<NodeSqliteDatabase["prepare"]>>();
  const prepared = (sql: string) => {
    let s = statements.get(sql);
    if (!s) statements.set(sql, (s = db.prepare(sql)));
    return s;
  };
  return {
    exec(sql, params) {
      if (!params) db.exec(sql);
      else prepared(sql).run(...params);
    },
    query<R>(sql: string, params?: readonly SqlValue[]) {
      return prepared(sql).all(...(params ?? [])) as R[];
    },
  };
}

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS fs_records (
     entity TEXT NOT NULL, record_id TEXT NOT NULL, customer_id TEXT,
     version TEXT, server TEXT, data TEXT,
     PRIMARY KEY (entity, record_id))`,
  `CREATE TABLE IF NOT EXISTS fs_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS fs_outbox (
     client_mutation_id TEXT PRIMARY KEY, counter INTEGER NOT NULL, body TEXT NOT NULL)`,
  `CREATE INDEX IF NOT EXISTS fs_outbox_counter ON fs_outbox (counter)`,
];

interface RecordRow {
  entity: string;
  record_id: string;
  customer_id: string | null;
  version: string | null;
  server: string | null;
  data: string | null;
}

const json = (v: unknown): string | null => (v === null || v === undefined ? null : JSON.stringify(v));
const parse = <T>(v: string | null): T | null => (v === null ? null : (JSON.parse(v) as T));

function fromRow(row: RecordRow): StoredRecord {
  return {
    entity: row.entity as Entity,
    recordId: row.record_id,
    customerId: row.customer_id,
    version: parse(row.version),
    server: parse(row.server),
    data: parse(row.data),
  };
}

/** A store on SQLite: records, checkpoints and the outbox in three tables, one transaction per batch. */
export class SqliteStore implements SyncStore {
  private mutex = new Mutex();
  private ready: Promise<void>;

  /**
   * `wal` (default true): WAL journal with synchronous=NORMAL, the usual mobile set-up (what
   * expo-sqlite and op-sqlite use): a commit survives the app being killed, without an fsync
   * per transaction. Pass false to leave the connection's journal settings alone.
   */
  constructor(private driver: SqliteDriver, options: { wal?: boolean } = {}) {
    this.ready = (async () => {
      if (options.wal !== false) {
        await driver.query("PRAGMA journal_mode = WAL");
        await driver.exec("PRAGMA synchronous = NORMAL");
      }
      for (const sql of SCHEMA) await driver.exec(sql);
    })();
  }

  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    const d = this.driver;
    return this.mutex.run(async () => {
      await this.ready;
      await d.exec("BEGIN IMMEDIATE");
      const tx: StoreTx = {
        async getRecord(entity, id) {
          const rows = await d.query<RecordRow>(
            "SELECT * FROM fs_records WHERE entity = ? AND record_id = ?",
            [entity, id],
          );
          return rows.length ? fromRow(rows[0]) : undefined;
        },
        async putRecord(r) {
          await d.exec(
            "INSERT OR REPLACE INTO fs_records (entity, record_id, customer_id, version, server, data) VALUES (?, ?, ?, ?, ?, ?)",
            [r.entity, r.recordId, r.customerId, json(r.version), json(r.server), json(r.data)],
          );
        },
        async deleteRecord(entity, id) {
          await d.exec("DELETE FROM fs_records WHERE entity = ? AND record_id = ?", [entity, id]);
        },
        async deleteRecordsOf(entities) {
          for (const e of entities) await d.exec("DELETE FROM fs_records WHERE entity = ?", [e]);
        },
        async listRecords(entity) {
          const rows = await d.query<RecordRow>(
            "SELECT * FROM fs_records WHERE entity = ? ORDER BY record_id",
            [entity],
          );
          return rows.map(fromRow);
        },
        async getMeta<V>(key: string) {
          const rows = await d.query<{ value: string }>("SELECT value FROM fs_meta WHERE key = ?", [key]);
          return rows.length ? (JSON.parse(rows[0].value) as V) : undefined;
        },
        async setMeta(key, value) {
          await d.exec("INSERT OR REPLACE INTO fs_meta (key, value) VALUES (?, ?)", [key, JSON.stringify(value)]);
        },
        async listOutbox() {
          const rows = await d.query<{ body: string }>("SELECT body FROM fs_outbox ORDER BY counter", []);
          return rows.map((r) => JSON.parse(r.body) as OutboxEntry);
        },
        async putOutbox(e) {
          await d.exec(
            "INSERT OR REPLACE INTO fs_outbox (client_mutation_id, counter, body) VALUES (?, ?, ?)",
            [e.clientMutationId, e.counter, JSON.stringify(e)],
          );
        },
        async deleteOutbox(id) {
          await d.exec("DELETE FROM fs_outbox WHERE client_mutation_id = ?", [id]);
        },
      };
      try {
        const result = await fn(tx);
        await d.exec("COMMIT");
        return result;
      } catch (error) {
        await d.exec("ROLLBACK");
        throw error;
      }
    });
  }

  async close(): Promise<void> {
    await this.mutex.run(async () => undefined);
  }
}
