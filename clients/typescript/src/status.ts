import type { ConnectionState } from "./transport.js";
import type { ConflictReport, Entity, RefusalReport } from "./types.js";

/** What the app shows about sync: the phone-side half of "a sync that silently failed shows". */
export interface SyncStatus {
  deviceId: string | null;
  /** The network as the client last saw it (HTTP requests and the live socket). */
  connection: ConnectionState;
  /** The live subscription is running (it may be reconnecting: see `connection`). */
  live: boolean;
  pulling: boolean;
  pushing: boolean;
  /** Changes in the outbox (not yet answered by the server). */
  pendingChanges: number;
  /** Last complete pull per record type (ISO time). */
  lastPullAt: Partial<Record<Entity, string>>;
  /** Last push per record type (ISO time). */
  lastPushAt: Partial<Record<Entity, string>>;
  /** Conflicts the server reported and how they were settled, until the app dismisses them. */
  conflicts: ConflictReport[];
  /** Changes the server refused for good (never retried), until the app dismisses them. */
  refusals: RefusalReport[];
  /** The last failure (cleared by the next success of the same operation). */
  lastError: { operation: string; message: string; at: string } | null;
}

export function initialStatus(): SyncStatus {
  return {
    deviceId: null,
    connection: "offline",
    live: false,
    pulling: false,
    pushing: false,
    pendingChanges: 0,
    lastPullAt: {},
    lastPushAt: {},
    conflicts: [],
    refusals: [],
    lastError: null,
  };
}

/** Holds the status and tells listeners about every change. */
export class StatusHolder {
  private value: SyncStatus = initialStatus();
  private listeners = new Set<(s: SyncStatus) => void>();

  get current(): SyncStatus {
    return structuredClone(this.value);
  }

  update(patch: Partial<SyncStatus>): void {
    this.value = { ...this.value, ...patch };
    const snapshot = this.current;
    for (const l of this.listeners) {
      try {
        l(snapshot);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  subscribe(listener: (s: SyncStatus) => void): () => void {
    this.listeners.add(listener);
    listener(this.current);
    return () => this.listeners.delete(listener);
  }
}
