import { backoffDelay, sleep, type BackoffOptions } from "./backoff.js";
import * as docs from "./documents.js";
import {
  PATCH_KEYS,
  SyncEntityValues,
  type ChangeOutcome,
  type ConflictResolver,
  type FieldConflict,
  type FieldError,
  type OfflineMode,
  type PatchByEntity,
  type RecordDataByEntity,
  type SelectionMode,
  type VersionVector,
} from "./generated/schema.js";
import { applyPatch, deepEqual, emptyData, mergePatches } from "./patch.js";
import { StatusHolder, type SyncStatus } from "./status.js";
import type { StoreTx, SyncStore } from "./store/types.js";
import { GraphQLRequestError, Transport, TransportError, type TransportOptions } from "./transport.js";
import type {
  ConflictReport,
  Entity,
  OutboxEntry,
  RefusalReport,
  StoredRecord,
  SyncChange,
  WritableEntity,
} from "./types.js";

/** What a conflict hook sees: the server's record (non-conflicting fields already written) and both values of each conflicting field. */
export interface ConflictContext {
  entity: Entity;
  recordId: string;
  conflictId: string | null;
  conflicts: FieldConflict[];
  /** The record as the server holds it now. */
  server: Record<string, unknown> | null;
  version: VersionVector | null;
  /** The change the device pushed. */
  patch: Record<string, unknown>;
}

/**
 * How to settle a conflict. `keep: "server"` (the default) keeps the server's value of each
 * conflicting field; `keep: "client"` pushes the device's values of those fields again, now
 * from the server's version; `values` pushes the given values. The change's other fields were
 * already written by the server in every case.
 */
export type ConflictDecision = { keep: "server" } | { keep: "client" } | { values: Record<string, unknown> };
export type ConflictHandler = (
  conflict: ConflictContext,
) => ConflictDecision | void | undefined | Promise<ConflictDecision | void | undefined>;

export interface DeviceOptions {
  name?: string;
  platform?: string;
  appVersion?: string;
  offlineMode?: OfflineMode;
  /** SERVER: the tenant's policy settles conflicts; CLIENT: this client does (its conflict hook). */
  resolvesConflicts?: ConflictResolver;
}

export interface FieldsyncClientOptions extends TransportOptions {
  store: SyncStore;
  device?: DeviceOptions;
  /** The feeds (record types) this client syncs, each with its own checkpoint (default: all). */
  types?: Entity[];
  /** Changes per pull page (default 500, at most 1,000). */
  pageSize?: number;
  /** Changes per push (default 500, at most 1,000). */
  pushBatchSize?: number;
  /** Retry delays (exponential, full jitter). */
  backoff?: BackoffOptions;
  /** Tries of one request before the operation gives up and reports `lastError` (default 6). */
  maxAttempts?: number;
  onConflict?: ConflictHandler;
  /** Tell the server the outbox size after each push (default true): its status says BEHIND. */
  reportPendingChanges?: boolean;
}

export interface DeviceInfo {
  id: string;
  replicaId: string;
  resolvesConflicts: ConflictResolver;
}

/** A sync call failed for good (after its retries) or was refused. */
export class FieldsyncError extends Error {
  constructor(message: string, readonly code?: string, override readonly cause?: unknown) {
    super(message);
    this.name = "FieldsyncError";
  }
}

interface PullPage {
  checkpoint: string | null;
  hasMore?: boolean;
  reset: boolean;
  changes: SyncChange[];
}

interface ChangeResult {
  clientMutationId: string;
  entity: Entity;
  recordId: string;
  outcome: ChangeOutcome;
  version: VersionVector | null;
  conflictId: string | null;
  conflicts: FieldConflict[];
  fieldErrors: FieldError[];
  message: string;
  replayed: boolean;
  record: SyncChange | null;
}

type PushResponse =
  | { __typename: "PushResult"; reregisterRequired: boolean; results: ChangeResult[] }
  | { __typename: string; code: string; message: string };

export interface RecordView<E extends Entity = Entity> {
  entity: E;
  recordId: string;
  customerId: string | null;
  version: VersionVector | null;
  data: RecordDataByEntity[E];
  /** Edits of this record wait in the outbox. */
  pending: boolean;
}

export interface PushSummary {
  sent: number;
  /** Answers that were replays of an earlier push (a resend after a lost response). */
  replayed: number;
  outcomes: Partial<Record<ChangeOutcome, number>>;
}

export type ClientEvent = "records" | "conflict" | "refusal" | "batch";

/** A live batch applied: when it arrived and when it was in the store (performance.now() ms). */
export interface LiveBatchTiming {
  types: Entity[];
  changes: number;
  receivedAt: number;
  appliedAt: number;
}
type Listener = (payload: any) => void;

const META_DEVICE = "device";
const META_COUNTER = "counter";
const META_SELECTION = "selection";
const META_CONFLICTS = "conflicts";
const META_REFUSALS = "refusals";
const META_LAST_PULL = "lastPullAt";
const META_LAST_PUSH = "lastPushAt";
const checkpointKey = (types: readonly Entity[]) => `checkpoint:${[...types].sort().join(",")}`;
const nowIso = () => new Date().toISOString();
const FINAL_REFUSALS = new Set<ChangeOutcome>(["VALIDATION_FAILED", "FORBIDDEN"]);

/** Does vector `a` strictly dominate `b` (every entry >=, and not equal)? */
export function strictlyDominates(a: VersionVector | null, b: VersionVector | null): boolean {
  if (!a || !b) return false;
  let greater = false;
  for (const [k, v] of Object.entries(b)) {
    const av = a[k] ?? 0;
    if (av < v) return false;
    if (av > v) greater = true;
  }
  for (const [k, v] of Object.entries(a)) if (!(k in b) && v > 0) greater = true;
  return greater;
}

/**
 * The sync engine: registration, selection, per-type feeds (pull and live), the persisted
 * outbox, conflicts and refusals, and the status the app shows.
 */
export class FieldsyncClient {
  readonly transport: Transport;
  readonly store: SyncStore;
  readonly types: Entity[];
  private readonly statusHolder = new StatusHolder();
  private readonly listeners = new Map<ClientEvent, Set<Listener>>();
  private readonly abort = new AbortController();
  private pushing: Promise<PushSummary> | undefined;
  private pushAgain = false;
  private device: DeviceInfo | undefined;
  private liveFeeds: Array<() => void> = [];
  private feedQueues = new Map<string, Promise<void>>();
  private pullsRunning = 0;

  constructor(readonly options: FieldsyncClientOptions) {
    this.transport = new Transport(options);
    this.store = options.store;
    this.types = options.types ?? [...SyncEntityValues];
    this.transport.onConnection((state) => this.statusHolder.update({ connection: state }));
  }

  /** Open a client on its store: loads the device, outbox size, reports and sync times. */
  static async open(options: FieldsyncClientOptions): Promise<FieldsyncClient> {
    const client = new FieldsyncClient(options);
    await client.load();
    return client;
  }

  private async load(): Promise<void> {
    const s = await this.store.transaction(async (tx) => ({
      device: await tx.getMeta<DeviceInfo>(META_DEVICE),
      outbox: (await tx.listOutbox()).length,
      conflicts: (await tx.getMeta<ConflictReport[]>(META_CONFLICTS)) ?? [],
      refusals: (await tx.getMeta<RefusalReport[]>(META_REFUSALS)) ?? [],
      lastPullAt: (await tx.getMeta<SyncStatus["lastPullAt"]>(META_LAST_PULL)) ?? {},
      lastPushAt: (await tx.getMeta<SyncStatus["lastPushAt"]>(META_LAST_PUSH)) ?? {},
    }));
    this.device = s.device;
    this.statusHolder.update({
      deviceId: s.device?.id ?? null,
      pendingChanges: s.outbox,
      conflicts: s.conflicts,
      refusals: s.refusals,
      lastPullAt: s.lastPullAt,
      lastPushAt: s.lastPushAt,
    });
  }

  // ---------------------------------------------------------------- status and events

  get status(): SyncStatus {
    return this.statusHolder.current;
  }

  /** Observe the status (called at once with the current one); returns the unsubscribe. */
  onStatus(listener: (status: SyncStatus) => void): () => void {
    return this.statusHolder.subscribe(listener);
  }

  /** `records`: records changed locally (from the server or the app); `conflict`, `refusal`: reported once each. */
  on(event: "records", listener: (changed: Array<{ entity: Entity; recordId: string }>) => void): () => void;
  on(event: "conflict", listener: (report: ConflictReport) => void): () => void;
  on(event: "refusal", listener: (report: RefusalReport) => void): () => void;
  on(event: "batch", listener: (timing: LiveBatchTiming) => void): () => void;
  on(event: ClientEvent, listener: Listener): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => set!.delete(listener);
  }

  private emit(event: ClientEvent, payload: unknown): void {
    for (const l of this.listeners.get(event) ?? []) {
      try {
        l(payload);
      } catch {
        // the app's listener failed: not the sync's problem
      }
    }
  }

  /** Forget a reported conflict or refusal (the app showed it). */
  async dismiss(reportId: string): Promise<void> {
    const s = await this.store.transaction(async (tx) => {
      const conflicts = ((await tx.getMeta<ConflictReport[]>(META_CONFLICTS)) ?? []).filter((c) => c.id !== reportId);
      const refusals = ((await tx.getMeta<RefusalReport[]>(META_REFUSALS)) ?? []).filter((r) => r.id !== reportId);
      await tx.setMeta(META_CONFLICTS, conflicts);
      await tx.setMeta(META_REFUSALS, refusals);
      return { conflicts, refusals };
    });
    this.statusHolder.update(s);
  }

  private fail(operation: string, error: unknown): void {
    this.statusHolder.update({
      lastError: { operation, message: (error as Error)?.message ?? String(error), at: nowIso() },
    });
  }

  private succeed(operation: string): void {
    const e = this.statusHolder.current.lastError;
    const patch: Partial<SyncStatus> = { connection: "online" };
    if (e && e.operation === operation) patch.lastError = null;
    this.statusHolder.update(patch);
  }

  // ---------------------------------------------------------------- requests

  /** One request, retried on network and server failures with exponential backoff and full jitter. */
  private async request<T>(operation: string, query: string, variables: Record<string, unknown>): Promise<T> {
    const attempts = this.options.maxAttempts ?? 6;
    for (let attempt = 0; ; attempt++) {
      try {
        const data = await this.transport.request<T>(query, variables);
        this.succeed(operation);
        return data;
      } catch (error) {
        this.fail(operation, error);
        const transient = error instanceof GraphQLRequestError && error.transient;
        if (!(error instanceof TransportError) && !transient) throw error;
        if (!transient) this.statusHolder.update({ connection: "offline" });
        if (attempt + 1 >= attempts || this.abort.signal.aborted) {
          throw new FieldsyncError(`${operation} failed after ${attempt + 1} tries: ${error.message}`, "NETWORK", error);
        }
        await sleep(backoffDelay(attempt, this.options.backoff), this.abort.signal);
        if (this.abort.signal.aborted) throw new FieldsyncError(`${operation}: the client was closed`, "CLOSED", error);
      }
    }
  }

  // ---------------------------------------------------------------- device and selection

  /** Register this install once (kept in the store); later calls return the stored device. */
  async register(): Promise<DeviceInfo> {
    if (this.device) return this.device;
    const d = this.options.device ?? {};
    const input = {
      name: d.name ?? "fieldsync client",
      platform: d.platform ?? "js",
      appVersion: d.appVersion ?? "",
      offlineMode: d.offlineMode ?? "AUTOMATIC",
      resolvesConflicts: d.resolvesConflicts ?? "SERVER",
    };
    const data = await this.request<{ registerDevice: { __typename: string } & Partial<DeviceInfo> & { message?: string; code?: string } }>(
      "register",
      docs.REGISTER,
      { input },
    );
    const r = data.registerDevice;
    if (r.__typename !== "Device") throw new FieldsyncError(`registerDevice: ${r.message}`, r.code);
    const device: DeviceInfo = { id: r.id!, replicaId: r.replicaId!, resolvesConflicts: r.resolvesConflicts! };
    await this.store.transaction(async (tx) => {
      await tx.setMeta(META_DEVICE, device);
      await tx.setMeta(META_COUNTER, 0);
    });
    this.device = device;
    this.statusHolder.update({ deviceId: device.id });
    return device;
  }

  private async deviceId(): Promise<string> {
    return (await this.register()).id;
  }

  /** Choose the customers this device syncs; the next pull (or the live feed) evicts the others. */
  async selectCustomers(mode: SelectionMode, customerIds: string[] = []): Promise<void> {
    const d = await this.deviceId();
    const data = await this.request<{ selectCustomers: { __typename: string; message?: string; code?: string } }>(
      "select",
      docs.SELECT,
      { d, mode, ids: mode === "ALL" ? null : customerIds },
    );
    const r = data.selectCustomers;
    if (r.__typename !== "Device") throw new FieldsyncError(`selectCustomers: ${r.message}`, r.code);
    await this.store.transaction((tx) => tx.setMeta(META_SELECTION, { mode, customerIds }));
  }

  /** The server's view of this device (status, lag, open conflicts). */
  async serverState(): Promise<Record<string, unknown>> {
    const d = await this.deviceId();
    return (await this.request<{ syncState: Record<string, unknown> }>("syncState", docs.SYNC_STATE, { d })).syncState;
  }

  // ---------------------------------------------------------------- reading the store

  async get<E extends Entity>(entity: E, recordId: string): Promise<RecordView<E> | null> {
    return this.store.transaction(async (tx) => {
      const r = await tx.getRecord(entity, recordId);
      if (!r || r.data === null) return null;
      const pending = (await tx.listOutbox()).some((e) => e.entity === entity && e.recordId === recordId);
      return { entity, recordId, customerId: r.customerId, version: r.version, data: r.data as RecordDataByEntity[E], pending };
    });
  }

  async list<E extends Entity>(entity: E): Promise<Array<RecordView<E>>> {
    return this.store.transaction(async (tx) => {
      const pending = new Set((await tx.listOutbox()).map((e) => `${e.entity}:${e.recordId}`));
      return (await tx.listRecords(entity))
        .filter((r) => r.data !== null)
        .map((r) => ({
          entity,
          recordId: r.recordId,
          customerId: r.customerId,
          version: r.version,
          data: r.data as RecordDataByEntity[E],
          pending: pending.has(`${entity}:${r.recordId}`),
        }));
    });
  }

  /** The outbox, in counter order. */
  async outbox(): Promise<OutboxEntry[]> {
    return this.store.transaction((tx) => tx.listOutbox());
  }

  // ---------------------------------------------------------------- local edits

  /** Create a record offline; returns its new uuid. Contacts and facilities need `customerId`, assets `facilityId`. */
  async create<E extends WritableEntity>(entity: E, fields: PatchByEntity[E], recordId: string = crypto.randomUUID()): Promise<string> {
    await this.store.transaction(async (tx) => {
      const existing = await tx.getRecord(entity, recordId);
      if (existing) throw new FieldsyncError(`${entity} ${recordId} exists already`, "EXISTS");
      const f = fields as Record<string, unknown>;
      let customerId: string | null = null;
      if (entity === "CUSTOMER") customerId = recordId;
      else if (typeof f.customerId === "string") customerId = f.customerId;
      else if (entity === "ASSET" && typeof f.facilityId === "string") {
        customerId = (await tx.getRecord("FACILITY", f.facilityId))?.customerId ?? null;
      }
      if (entity !== "CUSTOMER" && !customerId) {
        throw new FieldsyncError(`${entity} needs ${entity === "ASSET" ? "a known facilityId" : "customerId"}`, "VALIDATION");
      }
      const record: StoredRecord = { entity, recordId, customerId, version: null, server: null, data: null };
      await this.enqueue(tx, record, "UPSERT", f);
    });
    await this.afterLocalWrite([{ entity, recordId }]);
    return recordId;
  }

  /** Change fields of a record offline (only the given fields are sent). */
  async update<E extends WritableEntity>(entity: E, recordId: string, patch: PatchByEntity[E]): Promise<void> {
    await this.store.transaction(async (tx) => {
      const record = await tx.getRecord(entity, recordId);
      if (!record || record.data === null) throw new FieldsyncError(`no ${entity} ${recordId} here`, "NOT_FOUND");
      await this.enqueue(tx, record, "UPSERT", patch as Record<string, unknown>);
    });
    await this.afterLocalWrite([{ entity, recordId }]);
  }

  /** Delete a record offline. */
  async delete(entity: WritableEntity, recordId: string): Promise<void> {
    await this.store.transaction(async (tx) => {
      const record = await tx.getRecord(entity, recordId);
      if (!record || record.data === null) throw new FieldsyncError(`no ${entity} ${recordId} here`, "NOT_FOUND");
      await this.enqueue(tx, record, "DELETE", {});
    });
    await this.afterLocalWrite([{ entity, recordId }]);
  }

  private async afterLocalWrite(changed: Array<{ entity: Entity; recordId: string }>): Promise<void> {
    const pending = await this.store.transaction(async (tx) => (await tx.listOutbox()).length);
    this.statusHolder.update({ pendingChanges: pending });
    this.emit("records", changed);
    if (this.liveFeeds.length) void this.push().catch(() => undefined);
  }

  private async nextCounter(tx: StoreTx): Promise<number> {
    const counter = ((await tx.getMeta<number>(META_COUNTER)) ?? 0) + 1;
    await tx.setMeta(META_COUNTER, counter);
    return counter;
  }

  /** Add an edit to the outbox (coalesced into the record's unsent change when it has the same base) and refresh the record's view. */
  private async enqueue(
    tx: StoreTx,
    record: StoredRecord,
    op: "UPSERT" | "DELETE",
    patch: Record<string, unknown>,
    resolvesConflictId: string | null = null,
  ): Promise<void> {
    const all = await tx.listOutbox();
    const mine = all.filter((e) => e.entity === record.entity && e.recordId === record.recordId);
    const last = mine[mine.length - 1];
    const sameBase = last && JSON.stringify(last.baseVersion) === JSON.stringify(record.version);
    if (op === "UPSERT" && last && last.state === "pending" && last.op === "UPSERT" && sameBase && !resolvesConflictId && !last.resolvesConflictId) {
      last.patch = mergePatches(last.patch, patch);
      await tx.putOutbox(last);
    } else if (op === "DELETE" && record.server === null && mine.length && mine.every((e) => e.state === "pending")) {
      // Created and deleted here, never sent: nothing to tell the server.
      for (const e of mine) await tx.deleteOutbox(e.clientMutationId);
      await tx.deleteRecord(record.entity, record.recordId);
      return;
    } else {
      const entry: OutboxEntry = {
        clientMutationId: crypto.randomUUID(),
        entity: record.entity as WritableEntity,
        recordId: record.recordId,
        op,
        patch: op === "DELETE" ? {} : patch,
        baseVersion: record.version,
        counter: await this.nextCounter(tx),
        state: "pending",
        resolvesConflictId,
        createdAt: nowIso(),
        attempts: 0,
      };
      if (op === "UPSERT" && record.version === null && record.server === null && record.entity !== "CUSTOMER") {
        // A create carries its links.
        if (record.customerId && !("customerId" in patch)) entry.patch = { customerId: record.customerId, ...patch };
      }
      await tx.putOutbox(entry);
    }
    await this.refresh(tx, record);
  }

  /** Recompute a record's view: the server's data with its outbox entries applied in order. */
  private async refresh(tx: StoreTx, record: StoredRecord, outbox?: OutboxEntry[]): Promise<void> {
    const entries = (outbox ?? (await tx.listOutbox())).filter(
      (e) => e.entity === record.entity && e.recordId === record.recordId,
    );
    let data: Record<string, unknown> | null = record.server ? { ...(record.server as unknown as Record<string, unknown>) } : null;
    for (const e of entries) {
      if (e.op === "DELETE") data = null;
      else data = applyPatch(data ?? emptyData(record.entity), e.patch);
    }
    if (data === null && record.server === null && !entries.length) {
      await tx.deleteRecord(record.entity, record.recordId);
      return;
    }
    await tx.putRecord({ ...record, data: data as StoredRecord["data"] });
  }

  // ---------------------------------------------------------------- applying server changes

  /** Apply one server change (pull, live batch, or a push's record). */
  private async applyChange(tx: StoreTx, change: SyncChange, outbox: OutboxEntry[]): Promise<void> {
    const existing = await tx.getRecord(change.entity, change.recordId);
    if (change.op === "UPSERT") {
      // A page read before a push we already applied must not take the record back.
      if (existing && strictlyDominates(existing.version, change.version)) return;
      await this.refresh(
        tx,
        {
          entity: change.entity,
          recordId: change.recordId,
          customerId: change.customerId,
          version: change.version,
          server: change.data as StoredRecord["server"],
          data: null,
        },
        outbox,
      );
    } else {
      // DELETE (a tombstone) or EVICT (out of this device's view): the local copy goes. Edits
      // still in the outbox are pushed; the server answers them (DELETED, FORBIDDEN, ...).
      if (!existing) return;
      await tx.deleteRecord(change.entity, change.recordId);
    }
  }

  private async applyPage(types: readonly Entity[], page: PullPage): Promise<void> {
    const changed: Array<{ entity: Entity; recordId: string }> = [];
    await this.store.transaction(async (tx) => {
      const outbox = await tx.listOutbox();
      if (page.reset) {
        // Drop every local record of the feed's types; edits in the outbox stay and are re-applied.
        const keep: StoredRecord[] = [];
        for (const t of types) {
          for (const r of await tx.listRecords(t)) {
            if (outbox.some((e) => e.entity === r.entity && e.recordId === r.recordId)) keep.push(r);
            changed.push({ entity: r.entity, recordId: r.recordId });
          }
        }
        await tx.deleteRecordsOf(types);
        for (const r of keep) await this.refresh(tx, { ...r, version: null, server: null }, outbox);
      }
      for (const c of page.changes) {
        await this.applyChange(tx, c, outbox);
        changed.push({ entity: c.entity, recordId: c.recordId });
      }
      await tx.setMeta(checkpointKey(types), page.checkpoint);
      if (!page.hasMore) {
        const at = (await tx.getMeta<SyncStatus["lastPullAt"]>(META_LAST_PULL)) ?? {};
        for (const t of types) at[t] = nowIso();
        await tx.setMeta(META_LAST_PULL, at);
        this.statusHolder.update({ lastPullAt: at });
      }
    });
    if (changed.length) this.emit("records", changed);
  }

  // ---------------------------------------------------------------- pull

  /** Pull every feed (one per type, concurrently) until caught up. */
  async pull(types: Entity[] = this.types): Promise<void> {
    await this.deviceId();
    this.pullsRunning++;
    this.statusHolder.update({ pulling: true });
    try {
      await Promise.all(types.map((t) => this.pullFeed([t])));
    } finally {
      this.pullsRunning--;
      this.statusHolder.update({ pulling: this.pullsRunning > 0 });
    }
  }

  /** Pull one feed until `hasMore` is false; its checkpoint is stored with each page. */
  async pullFeed(types: Entity[]): Promise<void> {
    const d = await this.deviceId();
    const limit = Math.min(this.options.pageSize ?? 500, 1000);
    for (;;) {
      const page = await this.serialFeed(types, async () => {
        const since = await this.store.transaction((tx) => tx.getMeta<string>(checkpointKey(types)));
        let result: PullPage;
        try {
          result = (await this.request<{ pull: PullPage }>("pull", docs.PULL, { d, since: since ?? null, limit, types })).pull;
        } catch (error) {
          if (since && error instanceof GraphQLRequestError && error.code === "BAD_USER_INPUT") {
            // A checkpoint the server no longer accepts: start the feed over, as a reset.
            result = (await this.request<{ pull: PullPage }>("pull", docs.PULL, { d, since: null, limit, types })).pull;
            result = { ...result, reset: true };
          } else throw error;
        }
        await this.applyPage(types, result);
        return result;
      });
      if (!page.hasMore) return;
    }
  }

  /** Pages and live batches of one feed are applied one at a time, in order. */
  private serialFeed<T>(types: readonly Entity[], job: () => Promise<T>): Promise<T> {
    const key = checkpointKey(types);
    const previous = this.feedQueues.get(key) ?? Promise.resolve();
    const next = previous.then(job, job);
    this.feedQueues.set(key, next.then(() => undefined, () => undefined));
    return next;
  }

  // ---------------------------------------------------------------- push

  /** Push the outbox until it is empty (or the network fails for good). Concurrent calls share one run. */
  async push(): Promise<PushSummary> {
    if (this.pushing) {
      this.pushAgain = true;
      return this.pushing;
    }
    this.pushing = (async () => {
      const summary: PushSummary = { sent: 0, replayed: 0, outcomes: {} };
      this.statusHolder.update({ pushing: true });
      try {
        do {
          this.pushAgain = false;
          await this.pushRounds(summary);
        } while (this.pushAgain);
        return summary;
      } finally {
        this.pushing = undefined;
        const pending = await this.store.transaction(async (tx) => (await tx.listOutbox()).length);
        this.statusHolder.update({ pushing: false, pendingChanges: pending });
        if (this.options.reportPendingChanges !== false && this.device) {
          await this.transport
            .request(docs.REPORT, { d: this.device.id, input: { pendingChanges: pending } })
            .catch(() => undefined);
        }
      }
    })();
    return this.pushing;
  }

  private async pushRounds(summary: PushSummary): Promise<void> {
    const d = await this.deviceId();
    const size = Math.min(this.options.pushBatchSize ?? 500, 1000);
    let stalled = 0;
    for (;;) {
      // Mark the batch sent before sending: after a restart it is resent as is (same ids and counters).
      const batch = await this.store.transaction(async (tx) => {
        const entries = (await tx.listOutbox()).slice(0, size);
        for (const e of entries) {
          if (e.state !== "sent" || e.attempts === 0) {
            e.state = "sent";
            e.attempts += 1;
            await tx.putOutbox(e);
          }
        }
        return entries;
      });
      if (!batch.length) return;
      const changes = batch.map((e) => ({
        clientMutationId: e.clientMutationId,
        recordId: e.recordId,
        op: e.op,
        baseVersion: e.baseVersion,
        counter: e.counter,
        patch: { [PATCH_KEYS[e.entity]]: e.patch },
        resolvesConflictId: e.resolvesConflictId,
      }));
      const data = await this.request<{ pushChanges: PushResponse }>("push", docs.PUSH, { d, changes });
      const r = data.pushChanges;
      if (r.__typename !== "PushResult" || !("results" in r)) {
        const err = r as { code: string; message: string };
        const error = new FieldsyncError(`pushChanges: ${err.message}`, err.code);
        this.fail("push", error);
        throw error;
      }
      summary.sent += batch.length;
      const settled = await this.applyResults(batch, r.results, r.reregisterRequired);
      for (const res of r.results) {
        summary.outcomes[res.outcome] = (summary.outcomes[res.outcome] ?? 0) + 1;
        if (res.replayed) summary.replayed++;
      }
      if (r.reregisterRequired) await this.reregister();
      if (settled === 0) {
        // Nothing was decided (all NOT_TRIED): wait, then try again; give up after a few rounds.
        if (++stalled >= (this.options.maxAttempts ?? 6)) {
          const error = new FieldsyncError("push: the server decided none of the changes", "NOT_TRIED");
          this.fail("push", error);
          throw error;
        }
        await sleep(backoffDelay(stalled, this.options.backoff), this.abort.signal);
      } else stalled = 0;
    }
  }

  /** Apply a push's outcomes: records from the server, conflicts through the hook, refusals reported once. Returns how many were decided. */
  private async applyResults(batch: OutboxEntry[], results: ChangeResult[], reregister: boolean): Promise<number> {
    const byId = new Map(batch.map((e) => [e.clientMutationId, e]));
    // Conflict hooks run first (app code, outside the store's transaction).
    const decisions = new Map<string, ConflictDecision>();
    for (const res of results) {
      if (res.outcome !== "CONFLICT") continue;
      const entry = byId.get(res.clientMutationId);
      if (!entry) continue;
      let decision: ConflictDecision = { keep: "server" };
      if (this.options.onConflict) {
        try {
          decision =
            (await this.options.onConflict({
              entity: res.entity,
              recordId: res.recordId,
              conflictId: res.conflictId,
              conflicts: res.conflicts,
              server: res.record?.data ?? null,
              version: res.record?.version ?? res.version,
              patch: entry.patch,
            })) ?? decision;
        } catch {
          decision = { keep: "server" };
        }
      }
      decisions.set(res.clientMutationId, decision);
    }
    const conflictReports: ConflictReport[] = [];
    const refusalReports: RefusalReport[] = [];
    const changed: Array<{ entity: Entity; recordId: string }> = [];
    let settled = 0;
    const pushedTypes = new Set<Entity>();
    await this.store.transaction(async (tx) => {
      for (const res of results) {
        const entry = byId.get(res.clientMutationId);
        if (!entry) continue;
        if (res.outcome === "NOT_TRIED") continue; // push again as it is
        if (reregister && res.outcome === "VALIDATION_FAILED" && res.fieldErrors.some((f) => f.field === "counter")) {
          continue; // pushed again under the new registration
        }
        settled++;
        pushedTypes.add(entry.entity);
        await tx.deleteOutbox(entry.clientMutationId);
        const outbox = await tx.listOutbox();
        const key = { entity: entry.entity, recordId: entry.recordId };
        changed.push(key);
        if (res.record) {
          // The server's record as it stands: store it as pulled (a tombstone drops the copy).
          const existing = await tx.getRecord(entry.entity, entry.recordId);
          if (res.record.op === "UPSERT") await this.applyChange(tx, res.record, outbox);
          else if (existing) await this.refresh(tx, { ...existing, version: null, server: null }, outbox);
        } else {
          // Not on the server, or not visible to this device: only the outbox's edits remain.
          const existing = await tx.getRecord(entry.entity, entry.recordId);
          if (existing) await this.refresh(tx, { ...existing, version: null, server: null }, outbox);
        }
        if (res.outcome === "CONFLICT") {
          const decision = decisions.get(res.clientMutationId) ?? { keep: "server" };
          const report: ConflictReport = {
            id: crypto.randomUUID(),
            clientMutationId: res.clientMutationId,
            entity: res.entity,
            recordId: res.recordId,
            conflictId: res.conflictId,
            conflicts: res.conflicts,
            resolution: "keep" in decision ? (decision.keep === "server" ? "KEEP_SERVER" : "KEEP_CLIENT") : "MERGE",
            at: nowIso(),
          };
          conflictReports.push(report);
          let values: Record<string, unknown> | null = null;
          if ("values" in decision) values = { ...decision.values };
          else if (decision.keep === "client") {
            values = Object.fromEntries(
              res.conflicts.filter((c) => c.field in entry.patch).map((c) => [c.field, entry.patch[c.field]]),
            );
          }
          // Never drop a non-conflicting edit: a field of the change outside `conflicts` that the
          // returned record does not hold is pushed again (from the server's version).
          const server = (res.record?.op === "UPSERT" ? res.record.data : null) as Record<string, unknown> | null;
          if (server) {
            const held = new Set(res.conflicts.map((c) => c.field));
            for (const [field, value] of Object.entries(entry.patch)) {
              if (held.has(field) || field === "customerId" || field === "facilityId") continue;
              if (!deepEqual(applyPatch(server, { [field]: value })[field], server[field])) {
                values = { ...(values ?? {}), [field]: value };
              }
            }
          }
          if (values && !Object.keys(values).length) values = null;
          const record = await tx.getRecord(entry.entity, entry.recordId);
          if (entry.op === "DELETE" && "keep" in decision && decision.keep === "client") {
            // The device's delete wins: delete again, now from the server's version.
            if (record && record.data !== null) await this.enqueue(tx, record, "DELETE", {}, res.conflictId);
          } else if (values && record && record.data !== null) {
            await this.enqueue(tx, record, "UPSERT", values, res.conflictId);
          }
        } else if (FINAL_REFUSALS.has(res.outcome) || (res.outcome === "DELETED" && entry.op === "UPSERT")) {
          refusalReports.push({
            id: crypto.randomUUID(),
            clientMutationId: res.clientMutationId,
            entity: res.entity,
            recordId: res.recordId,
            outcome: res.outcome as RefusalReport["outcome"],
            op: entry.op,
            patch: entry.patch,
            fieldErrors: res.fieldErrors,
            message: res.message,
            at: nowIso(),
          });
        }
      }
      const conflicts = [...((await tx.getMeta<ConflictReport[]>(META_CONFLICTS)) ?? []), ...conflictReports];
      const refusals = [...((await tx.getMeta<RefusalReport[]>(META_REFUSALS)) ?? []), ...refusalReports];
      const lastPushAt = (await tx.getMeta<SyncStatus["lastPushAt"]>(META_LAST_PUSH)) ?? {};
      for (const t of pushedTypes) lastPushAt[t] = nowIso();
      await tx.setMeta(META_CONFLICTS, conflicts);
      await tx.setMeta(META_REFUSALS, refusals);
      await tx.setMeta(META_LAST_PUSH, lastPushAt);
      this.statusHolder.update({ conflicts, refusals, lastPushAt, pendingChanges: (await tx.listOutbox()).length });
    });
    for (const c of conflictReports) this.emit("conflict", c);
    for (const r of refusalReports) this.emit("refusal", r);
    if (changed.length) this.emit("records", changed);
    return settled;
  }

  /** The server saw a counter reused (an app restored from a backup): register anew, renumber the outbox, pull every feed from the start. */
  private async reregister(): Promise<void> {
    const selection = await this.store.transaction(async (tx) => {
      await tx.setMeta(META_DEVICE, null);
      return tx.getMeta<{ mode: SelectionMode; customerIds: string[] }>(META_SELECTION);
    });
    this.device = undefined;
    await this.register();
    if (selection) await this.selectCustomers(selection.mode, selection.customerIds);
    await this.store.transaction(async (tx) => {
      let counter = 0;
      for (const e of await tx.listOutbox()) {
        await tx.putOutbox({ ...e, counter: ++counter, state: "pending", attempts: 0 });
      }
      await tx.setMeta(META_COUNTER, counter);
      for (const t of this.types) await tx.setMeta(checkpointKey([t]), null);
    });
  }

  // ---------------------------------------------------------------- sync and live

  /** Push the outbox, then pull every feed. */
  async sync(): Promise<void> {
    await this.push();
    await this.pull();
  }

  /**
   * Start the live feeds: one `changes` subscription per type over one socket, each from its
   * stored checkpoint; after a drop it reconnects with backoff and resumes from the checkpoint
   * of the last batch applied. Local edits are pushed as they happen.
   */
  async startLive(types: Entity[] = this.types): Promise<void> {
    if (this.liveFeeds.length) return;
    const d = await this.deviceId();
    const ws = this.transport.socket((retries) => sleep(backoffDelay(retries, this.options.backoff), this.abort.signal));
    this.statusHolder.update({ live: true });
    for (const t of types) {
      const feed = [t];
      const since = await this.store.transaction((tx) => tx.getMeta<string>(checkpointKey(feed)));
      // graphql-ws resubscribes with this same object after a reconnect: keep `since` current.
      const variables: Record<string, unknown> = { d, since: since ?? null, types: feed };
      let stopped = false;
      let failures = 0;
      let unsubscribe = () => {};
      const start = () => {
        unsubscribe = ws.subscribe<{ changes: PullPage }>(
          { query: docs.CHANGES, variables },
          {
            next: (message) => {
              const batch = message.data?.changes;
              if (!batch) return;
              const receivedAt = performance.now();
              failures = 0;
              void this.serialFeed(feed, async () => {
                await this.applyPage(feed, { ...batch, hasMore: false });
                variables.since = batch.checkpoint;
                this.emit("batch", { types: feed, changes: batch.changes.length, receivedAt, appliedAt: performance.now() });
              }).catch((error) => this.fail("live", error));
            },
            error: (error) => {
              // The server ended this subscription (not a socket drop: those are retried by graphql-ws).
              const errors = Array.isArray(error) ? error : [error];
              this.fail("live", new Error(errors.map((e: { message?: string }) => e?.message ?? String(e)).join("; ")));
              const code = errors[0]?.extensions?.code;
              void this.serialFeed(feed, async () => {
                if (code === "BAD_USER_INPUT" && variables.since) {
                  await this.applyPage(feed, { checkpoint: null, changes: [], reset: true, hasMore: true });
                  variables.since = null;
                }
              });
              // Resubscribe with growing, jittered delays (a refusal that persists does not spin).
              if (!stopped) setTimeout(() => !stopped && start(), backoffDelay(++failures, this.options.backoff));
            },
            complete: () => undefined,
          },
        );
      };
      start();
      this.liveFeeds.push(() => {
        stopped = true;
        unsubscribe();
      });
    }
    void this.push().catch(() => undefined);
  }

  async stopLive(): Promise<void> {
    for (const stop of this.liveFeeds) stop();
    this.liveFeeds = [];
    await this.transport.close();
    this.statusHolder.update({ live: false, connection: "offline" });
  }

  /** Stop live feeds and pending retries, wait for running work, close the store. */
  async close({ closeStore = true } = {}): Promise<void> {
    this.abort.abort();
    await this.stopLive();
    await this.pushing?.catch(() => undefined);
    await Promise.all([...this.feedQueues.values()]);
    if (closeStore) await this.store.close();
  }
}
