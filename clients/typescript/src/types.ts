import type {
  ChangeOutcome,
  FieldConflict,
  FieldError,
  PatchByEntity,
  PullOp,
  RecordDataByEntity,
  SyncEntity,
  VersionVector,
} from "./generated/schema.js";

export type Entity = SyncEntity;
/** Record types a device may write (every synced type but credentials). */
export type WritableEntity = keyof PatchByEntity;

/** One record as the local store holds it. */
export interface StoredRecord<E extends Entity = Entity> {
  entity: E;
  recordId: string;
  customerId: string | null;
  /** The server's version of `server` (null: created here, not confirmed yet). */
  version: VersionVector | null;
  /** The server's data as last pulled or returned by a push (null: not on the server yet). */
  server: RecordDataByEntity[E] | null;
  /** What the app sees: `server` with the outbox's pending edits applied; null: deleted here. */
  data: RecordDataByEntity[E] | null;
}

/** A change waiting in the outbox. */
export interface OutboxEntry {
  /** Idempotency key, kept until the server answers it. */
  clientMutationId: string;
  entity: WritableEntity;
  recordId: string;
  op: "UPSERT" | "DELETE";
  /** Only the changed fields, in sync shape. */
  patch: Record<string, unknown>;
  /** The version the edit was made from (null: a create). */
  baseVersion: VersionVector | null;
  /** The device counter this change carries; assigned once, never changed. */
  counter: number;
  /** `pending`: never sent (may still be coalesced); `sent`: maybe received by the server. */
  state: "pending" | "sent";
  resolvesConflictId: string | null;
  createdAt: string;
  attempts: number;
}

/** A change as pulled or returned by a push. */
export interface SyncChange {
  entity: Entity;
  recordId: string;
  customerId: string;
  op: PullOp;
  version: VersionVector;
  data: Record<string, unknown> | null;
}

/** A conflict the server reported for one pushed change. */
export interface ConflictReport {
  id: string;
  clientMutationId: string;
  entity: Entity;
  recordId: string;
  /** The server's stored conflict (SERVER resolver, MANUAL policy), else null. */
  conflictId: string | null;
  conflicts: FieldConflict[];
  /** How the client settled it: the default keeps the server's value of each conflicting field. */
  resolution: "KEEP_SERVER" | "KEEP_CLIENT" | "MERGE";
  at: string;
}

/** A change the server refused for good (never retried). */
export interface RefusalReport {
  id: string;
  clientMutationId: string;
  entity: Entity;
  recordId: string;
  outcome: Extract<ChangeOutcome, "VALIDATION_FAILED" | "FORBIDDEN" | "DELETED">;
  op: "UPSERT" | "DELETE";
  /** The refused edit, so the app can fix it and push it again as a new change. */
  patch: Record<string, unknown>;
  fieldErrors: FieldError[];
  message: string;
  at: string;
}
