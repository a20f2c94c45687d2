import { SYNC_FIELDS } from "./generated/schema.js";
import type { Entity } from "./types.js";

type Data = Record<string, unknown>;
const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** A new record's data before its patch: every key present, empty. */
export function emptyData(entity: Entity): Data {
  const fields = SYNC_FIELDS[entity] as Record<string, { kind: string; nullable: boolean }>;
  const data: Data = {};
  for (const [name, f] of Object.entries(fields)) {
    data[name] = f.kind === "array" ? [] : f.kind === "object" ? {} : null;
  }
  return data;
}

/** Apply a patch as the server does: custom fields merge by key (null clears), settings-like objects merge, the rest replaces. */
export function applyPatch(data: Data, patch: Data): Data {
  const out: Data = { ...data };
  for (const [key, value] of Object.entries(patch)) {
    if (value === undefined) continue;
    if (key === "customFields") {
      const merged: Data = { ...(isPlainObject(out[key]) ? (out[key] as Data) : {}) };
      if (isPlainObject(value)) {
        for (const [k, v] of Object.entries(value)) {
          if (v === null) delete merged[k];
          else merged[k] = v;
        }
      }
      out[key] = merged;
    } else if (isPlainObject(value) && isPlainObject(out[key]) && key === "settings") {
      out[key] = { ...(out[key] as Data), ...value };
    } else {
      out[key] = structuredClone(value);
    }
  }
  return out;
}

/** Merge a later patch into an earlier one (one change per record in the outbox). */
export function mergePatches(first: Data, later: Data): Data {
  const out: Data = { ...first };
  for (const [key, value] of Object.entries(later)) {
    if (value === undefined) continue;
    if ((key === "customFields" || key === "settings") && isPlainObject(value) && isPlainObject(out[key])) {
      out[key] = { ...(out[key] as Data), ...value };
    } else {
      out[key] = structuredClone(value);
    }
  }
  return out;
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((v, i) => deepEqual(v, bb[i]));
  }
  const ak = Object.keys(a as object);
  const bk = Object.keys(b as object);
  return ak.length === bk.length && ak.every((k) => deepEqual((a as Data)[k], (b as Data)[k]));
}

/** The fields of `next` that differ from `base` (custom fields by key, null for a removed key). */
export function diff(base: Data, next: Data): Data {
  const out: Data = {};
  for (const [key, value] of Object.entries(next)) {
    if (deepEqual(base[key], value)) continue;
    if (key === "customFields" && isPlainObject(value)) {
      const before = isPlainObject(base[key]) ? (base[key] as Data) : {};
      const cf: Data = {};
      for (const [k, v] of Object.entries(value)) if (!deepEqual(before[k], v)) cf[k] = v;
      for (const k of Object.keys(before)) if (!(k in value)) cf[k] = null;
      out[key] = cf;
    } else {
      out[key] = value;
    }
  }
  return out;
}
