export * from "./generated/schema.js";
export * from "./types.js";
export { FieldsyncClient, FieldsyncError, strictlyDominates } from "./client.js";
export type {
  ConflictContext,
  ConflictDecision,
  ConflictHandler,
  DeviceInfo,
  DeviceOptions,
  FieldsyncClientOptions,
  LiveBatchTiming,
  PushSummary,
  RecordView,
} from "./client.js";
export type { SyncStatus } from "./status.js";
export { Transport, TransportError, GraphQLRequestError } from "./transport.js";
export type { ConnectionState, TransportOptions } from "./transport.js";
export type { SyncStore, StoreTx } from "./store/types.js";
export { MemoryStore } from "./store/memory.js";
export { SqliteStore, nodeSqliteDriver } from "./store/sqlite.js";
export type { SqliteDriver, SqlValue } from "./store/sqlite.js";
export { backoffDelay, seededRandom } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { applyPatch, diff, mergePatches } from "./patch.js";
