/**
 * RxDB replication for fieldsync, on RxDB's replication primitives (`replicateRxCollection`).
 * One replication per collection, each on its own per-type feed; documents are records in
 * sync shape (`{id, customerId, version, ...data}`), so no per-entity code is needed.
 */
import { replicateRxCollection, type RxReplicationState } from "rxdb/plugins/replication";
import { Subject } from "rxjs";
import { backoffDelay, type BackoffOptions } from "./backoff.js";
import * as docs from "./documents.js";
import { PATCH_KEYS, SYNC_FIELDS, type ConflictResolver, type FieldConflict, type FieldError } from "./generated/schema.js";
import { deepEqual, diff } from "./patch.js";
import { MemoryStore } from "./store/memory.js";
import type { SyncStore } from "./store/types.js";
import { Transport, type TransportOptions } from "./transport.js";
import type { Entity, SyncChange, WritableEntity } from "./types.js";

type Doc = Record<string, any> & { id: string; _deleted?: boolean };

/** An RxDB JSON schema for a record type, from the generated sync shape. */
export function fieldsyncSchema(entity: Entity, options: { version?: number } = {}): any {
  const fields = SYNC_FIELDS[entity] as Record<string, { kind: string; nullable: boolean }>;
  const properties: Record<string, unknown> = {
    id: { type: "string", maxLength: 36 },
    customerId: { type: ["string", "null"] },
    version: { type: "object" },
  };
  for (const [name, f] of Object.entries(fields)) {
    const type = f.kind === "any" ? undefined : f.kind;
    properties[name] = type ? { type: f.nullable ? [type, "null"] : type } : {};
  }
  return {
    title: `fieldsync ${entity.toLowerCase()}`,
    version: options.version ?? 0,
    primaryKey: "id",
    type: "object",
    properties,
    required: ["id"],
  };
}

const META_KEYS = new Set(["id", "version", "_deleted", "_meta", "_rev", "_attachments"]);
const dataOf = (doc: Doc, entity: Entity): Record<string, unknown> => {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(SYNC_FIELDS[entity])) if (key in doc) out[key] = doc[key];
  if (entity !== "CUSTOMER" && "customerId" in doc && "customerId" in SYNC_FIELDS[entity]) out.customerId = doc.customerId;
  return out;
};

/**
 * The conflict handler for fieldsync collections: the server already wrote every field that
 * did not conflict, so its record is the resolution (the server's value for each conflicting
 * field, the device's for the rest). Documents are equal when data, version and deletion are.
 */
export const fieldsyncConflictHandler = {
  isEqual(a: Doc, b: Doc): boolean {
    return !!a._deleted === !!b._deleted && deepEqual(strip(a), strip(b));
  },
  async resolve(i: { realMasterState: Doc }): Promise<Doc> {
    return i.realMasterState;
  },
};
const strip = (d: Doc) => {
  const { _meta, _rev, _attachments, _deleted, ...rest } = d;
  return rest;
};

export interface ReplicationConflict {
  entity: Entity;
  recordId: string;
  conflictId: string | null;
  conflicts: FieldConflict[];
  /** The server's record (non-conflicting fields already written). */
  server: Doc | null;
  /** The device's document as it pushed it. */
  local: Doc;
}
export interface ReplicationRefusal {
  entity: Entity;
  recordId: string;
  outcome: "VALIDATION_FAILED" | "FORBIDDEN" | "DELETED";
  fieldErrors: FieldError[];
  message: string;
  /** The refused document; the collection now holds the server's record (or none). */
  local: Doc;
}

export interface ReplicateFieldsyncOptions extends TransportOptions {
  /** RxDB collections by record type, e.g. `{ CUSTOMER: db.customers, ASSET: db.assets }`. */
  collections: Partial<Record<Entity, any>>;
  /** Keeps the device registration and counter (default: in memory, a new device per run). */
  store?: SyncStore;
  device?: { name?: string; platform?: string; appVersion?: string; resolvesConflicts?: ConflictResolver };
  /** Customers to sync (default: every customer). */
  customerIds?: string[];
  /** Live stream (`changes` subscription) after the initial pull (default true). */
  live?: boolean;
  batchSize?: number;
  /** Retry delays for failed pulls and pushes (exponential, full jitter). */
  backoff?: BackoffOptions;
  /** Return values to push for a conflict (keep the device's), or nothing to keep the server's. */
  onConflict?: (c: ReplicationConflict) => Record<string, unknown> | void | Promise<Record<string, unknown> | void>;
  /** Called once per refused change; it is never retried. */
  onRefusal?: (r: ReplicationRefusal) => void;
  /** Replication identifier prefix (default "fieldsync"). */
  identifier?: string;
}

export interface FieldsyncReplication {
  deviceId: string;
  states: Partial<Record<Entity, RxReplicationState<any, any>>>;
  conflicts: ReplicationConflict[];
  refusals: ReplicationRefusal[];
  /** Resolves when every collection has pulled and pushed everything known so far. */
  awaitInSync(): Promise<void>;
  cancel(): Promise<void>;
}

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Replicate RxDB collections with a fieldsync server: one call for the whole set-up. */
export async function replicateFieldsync(options: ReplicateFieldsyncOptions): Promise<FieldsyncReplication> {
  const transport = new Transport(options);
  const store = options.store ?? new MemoryStore();
  const batchSize = Math.min(options.batchSize ?? 500, 1000);
  const conflicts: ReplicationConflict[] = [];
  const refusals: ReplicationRefusal[] = [];

  // The device: registered once per store, its counter persisted there.
  let device = await store.transaction((tx) => tx.getMeta<{ id: string }>("device"));
  if (!device) {
    const d = options.device ?? {};
    const { registerDevice: r } = await transport.request<{ registerDevice: any }>(docs.REGISTER, {
      input: { name: d.name ?? "rxdb", platform: d.platform ?? "js", appVersion: d.appVersion ?? "", resolvesConflicts: d.resolvesConflicts ?? "SERVER" },
    });
    if (r.__typename !== "Device") throw new Error(`registerDevice: ${r.message}`);
    device = { id: r.id };
    await store.transaction(async (tx) => {
      await tx.setMeta("device", device);
      await tx.setMeta("counter", 0);
    });
    if (options.customerIds) {
      const { selectCustomers: s } = await transport.request<{ selectCustomers: any }>(docs.SELECT, {
        d: r.id, mode: "SELECTED", ids: options.customerIds,
      });
      if (s.__typename !== "Device") throw new Error(`selectCustomers: ${s.message}`);
    }
  }
  const deviceId = device.id;
  const nextCounters = (n: number) =>
    store.transaction(async (tx) => {
      const first = ((await tx.getMeta<number>("counter")) ?? 0) + 1;
      await tx.setMeta("counter", first + n - 1);
      return first;
    });

  const toDoc = (c: SyncChange): Doc =>
    c.op === "UPSERT"
      ? { id: c.recordId, customerId: c.customerId, version: c.version, ...(c.data as object), _deleted: false }
      : { id: c.recordId, customerId: c.customerId, version: c.version, _deleted: true };

  const states: FieldsyncReplication["states"] = {};
  const sockets: Array<() => void> = [];
  for (const [entity, collection] of Object.entries(options.collections) as Array<[Entity, any]>) {
    if (!collection) continue;
    const types = [entity];
    const stream$ = new Subject<any>();
    let lastCheckpoint: string | null = null;
    let live: { variables: Record<string, unknown> } | undefined;

    const startLive = () => {
      if (live || options.live === false) return;
      const variables: Record<string, unknown> = { d: deviceId, since: lastCheckpoint, types };
      live = { variables };
      let connectedOnce = false;
      const ws = new Transport(options);
      const client = ws.socket((n) => new Promise((r) => setTimeout(r, backoffDelay(n, options.backoff))));
      ws.onConnection((state) => {
        // After a drop, let RxDB pull from its own checkpoint: nothing is missed.
        if (state === "online" && connectedOnce) stream$.next("RESYNC");
        if (state === "online") connectedOnce = true;
      });
      const stop = client.subscribe<{ changes: { checkpoint: string; reset: boolean; changes: SyncChange[] } }>(
        { query: docs.CHANGES, variables },
        {
          next: (message) => {
            const batch = message.data?.changes;
            if (!batch) return;
            variables.since = batch.checkpoint;
            if (batch.reset) return stream$.next("RESYNC");
            stream$.next({ documents: batch.changes.map(toDoc), checkpoint: { checkpoint: batch.checkpoint } });
          },
          error: () => stream$.next("RESYNC"),
          complete: () => undefined,
        },
      );
      sockets.push(() => {
        stop();
        void ws.close();
      });
    };

    const state = replicateRxCollection<any, { checkpoint: string }>({
      collection,
      replicationIdentifier: `${options.identifier ?? "fieldsync"}-${deviceId}-${entity}`,
      live: options.live !== false,
      retryTime: 1000,
      waitForLeadership: false,
      pull: {
        batchSize,
        stream$: stream$.asObservable(),
        handler: async (checkpoint, size) => {
          let since = checkpoint?.checkpoint ?? null;
          const documents = new Map<string, Doc>();
          let reset = false;
          for (;;) {
            const { pull } = await transport.request<{ pull: { checkpoint: string; hasMore: boolean; reset: boolean; changes: SyncChange[] } }>(
              docs.PULL, { d: deviceId, since, limit: batchSize, types },
            );
            if (pull.reset) {
              reset = true;
              documents.clear();
            }
            for (const c of pull.changes) documents.set(c.recordId, toDoc(c));
            since = pull.checkpoint;
            if (!pull.hasMore || documents.size >= size) {
              if (!pull.hasMore) {
                lastCheckpoint = since;
                startLive();
              }
              break;
            }
          }
          if (reset) {
            // The feed started over: every local document not in it goes.
            for (const doc of await collection.find().exec()) {
              if (!documents.has(doc.primary)) documents.set(doc.primary, { ...doc.toJSON(), _deleted: true });
            }
          }
          return { documents: [...documents.values()], checkpoint: { checkpoint: since! } };
        },
      },
      push: {
        batchSize,
        handler: async (rows) => {
          const changes: any[] = [];
          const pending: Array<{ row: (typeof rows)[number]; change: any }> = [];
          const first = await nextCounters(rows.length);
          let n = 0;
          for (const row of rows) {
            const doc = row.newDocumentState as Doc;
            const master = row.assumedMasterState as Doc | undefined;
            const baseVersion = master && !master._deleted ? (master.version ?? null) : null;
            let op: "UPSERT" | "DELETE" = "UPSERT";
            let patch: Record<string, unknown>;
            if (doc._deleted) {
              if (!master || master._deleted) continue; // never on the server
              op = "DELETE";
              patch = {};
            } else if (!master || master._deleted) {
              patch = dataOf(doc, entity);
              if (entity === "CUSTOMER") delete patch.customerId;
            } else {
              patch = diff(dataOf(master, entity), dataOf(doc, entity));
              delete patch.customerId;
              delete patch.facilityId;
              if (!Object.keys(patch).length) continue;
            }
            // The same edit resent (RxDB retries a failed push) keeps its id: a replay.
            const clientMutationId = await sha256(JSON.stringify([doc.id, op, baseVersion, patch]));
            const change = {
              clientMutationId, recordId: doc.id, op, baseVersion, counter: first + n++,
              patch: { [PATCH_KEYS[entity as WritableEntity]]: patch },
            };
            changes.push(change);
            pending.push({ row, change });
          }
          if (!changes.length) return [];
          const masters: Doc[] = [];
          let toSend = changes;
          let round = pending;
          for (let attempt = 0; toSend.length && attempt < 3; attempt++) {
            const { pushChanges: r } = await transport.request<{ pushChanges: any }>(docs.PUSH, { d: deviceId, changes: toSend });
            if (r.__typename !== "PushResult") throw new Error(`pushChanges: ${r.message}`);
            const again: typeof pending = [];
            for (const [i, res] of (r.results as any[]).entries()) {
              const { row, change } = round[i];
              const local = row.newDocumentState as Doc;
              if (res.outcome === "NOT_TRIED") throw new Error("pushChanges: not tried, retrying");
              const server = res.record ? toDoc(res.record) : null;
              if (res.outcome === "CONFLICT") {
                const c: ReplicationConflict = { entity, recordId: res.recordId, conflictId: res.conflictId, conflicts: res.conflicts, server, local };
                conflicts.push(c);
                const values = await options.onConflict?.(c);
                if (values && server && !server._deleted && Object.keys(values).length) {
                  const [counter] = [await nextCounters(1)];
                  const patch = { ...values };
                  const retry = {
                    clientMutationId: await sha256(JSON.stringify([local.id, "UPSERT", server.version, patch, res.conflictId])),
                    recordId: local.id, op: "UPSERT", baseVersion: server.version, counter,
                    patch: { [PATCH_KEYS[entity as WritableEntity]]: patch }, resolvesConflictId: res.conflictId,
                  };
                  again.push({ row, change: retry });
                  continue;
                }
              } else if (res.outcome === "VALIDATION_FAILED" || res.outcome === "FORBIDDEN" || (res.outcome === "DELETED" && change.op === "UPSERT")) {
                const refusal: ReplicationRefusal = { entity, recordId: res.recordId, outcome: res.outcome, fieldErrors: res.fieldErrors, message: res.message, local };
                refusals.push(refusal);
                options.onRefusal?.(refusal);
              }
              // The server's record is the master state: RxDB stores it through the conflict handler.
              masters.push(server ?? { ...local, _deleted: true });
            }
            toSend = again.map((p) => p.change);
            round = again;
          }
          return masters;
        },
      },
    });
    state.error$.subscribe(() => undefined);
    states[entity] = state;
  }

  return {
    deviceId,
    states,
    conflicts,
    refusals,
    async awaitInSync() {
      await Promise.all(Object.values(states).map((s) => s!.awaitInSync()));
    },
    async cancel() {
      for (const stop of sockets) stop();
      await Promise.all(Object.values(states).map((s) => s!.cancel()));
      await transport.close();
    },
  };
}
