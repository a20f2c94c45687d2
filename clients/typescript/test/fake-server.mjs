// A small in-process fake of the server's sync API for unit tests (behind an injected fetch).
import { applyPatch } from "../dist/index.js";

export function createFakeServer() {
  const state = {
    records: new Map(), // id -> {entity, recordId, customerId, version, data, deleted}
    log: [], // {seq, entity, recordId}
    receipts: new Map(), // cmid -> result
    pushes: [], // every pushChanges request's changes
    requests: 0,
    seq: 0,
    device: null,
  };
  const hooks = {
    /** (change) => partial result to force an outcome, or undefined */
    decide: undefined,
    /** throw before handling (network down) */
    offline: false,
    /** handle, then throw (the response is lost) */
    loseResponse: 0,
    /** return HTTP 503 this many times */
    fail503: 0,
    resetNext: false,
    reregister: false,
  };
  const entityOf = (patch) => Object.keys(patch)[0].toUpperCase();
  const change = (r) => ({
    entity: r.entity,
    recordId: r.recordId,
    customerId: r.customerId,
    op: r.deleted ? "DELETE" : "UPSERT",
    version: r.version,
    data: r.deleted ? null : r.data,
  });
  function write(r) {
    state.records.set(r.recordId, r);
    state.log.push({ seq: ++state.seq, recordId: r.recordId });
  }
  function serverWrite(entity, recordId, customerId, data, deleted = false) {
    const old = state.records.get(recordId);
    const version = { ...(old?.version ?? {}), server: (old?.version?.server ?? 0) + 1 };
    write({ entity, recordId, customerId, version, data: { ...(old?.data ?? {}), ...data }, deleted });
  }
  function push(deviceId, changes) {
    state.pushes.push(changes);
    if (hooks.reregister) {
      // A restored app: its counters were used by its earlier self.
      hooks.reregister = false;
      return { __typename: "PushResult", reregisterRequired: true, results: changes.map((c) => ({
        clientMutationId: c.clientMutationId, entity: entityOf(c.patch), recordId: c.recordId, outcome: "VALIDATION_FAILED",
        version: null, conflictId: null, conflicts: [], fieldErrors: [{ field: "counter", message: "was already used" }],
        message: "register again", replayed: false, record: null })) };
    }
    const results = changes.map((c) => {
      const entity = entityOf(c.patch);
      const patch = Object.values(c.patch)[0];
      const prior = state.receipts.get(c.clientMutationId);
      const current = () => (state.records.get(c.recordId) ? change(state.records.get(c.recordId)) : null);
      if (prior) return { ...prior, replayed: true, record: current() };
      const base = { clientMutationId: c.clientMutationId, entity, recordId: c.recordId, version: null,
        conflictId: null, conflicts: [], fieldErrors: [], message: "", replayed: false };
      const forced = hooks.decide?.(c, state);
      if (forced?.outcome === "NOT_TRIED") return { ...base, ...forced, record: current() };
      let result;
      if (forced && forced.outcome !== "CONFLICT") {
        result = { ...base, ...forced };
      } else {
        const old = state.records.get(c.recordId);
        if (old?.deleted) result = { ...base, outcome: "DELETED" };
        else {
          const held = new Set(forced?.hold ?? (forced?.conflicts ?? []).map((f) => f.field));
          const apply = Object.fromEntries(Object.entries(patch).filter(([k]) => !held.has(k)));
          const version = { ...(old?.version ?? {}), [state.device.replicaId]: c.counter };
          const customerId = old?.customerId ?? (entity === "CUSTOMER" ? c.recordId : patch.customerId);
          write({ entity, recordId: c.recordId, customerId, version, deleted: c.op === "DELETE",
            data: applyPatch(old?.data ?? {}, apply) });
          result = { ...base, outcome: forced?.outcome ?? "APPLIED", conflicts: forced?.conflicts ?? [], conflictId: forced?.conflictId ?? null, version };
        }
      }
      state.receipts.set(c.clientMutationId, result);
      return { ...result, record: current() };
    });
    return { __typename: "PushResult", reregisterRequired: false, results };
  }
  function pull(vars) {
    const since = vars.since ? Number(vars.since) : 0;
    const types = vars.types ?? ["CUSTOMER", "CONTACT", "FACILITY", "ASSET", "CREDENTIAL"];
    const reset = hooks.resetNext;
    hooks.resetNext = false;
    const from = reset ? 0 : since;
    const seen = new Map();
    let last = from;
    let count = 0;
    let hasMore = false;
    for (const entry of state.log) {
      if (entry.seq <= from) continue;
      const r = state.records.get(entry.recordId);
      if (!types.includes(r.entity)) { last = entry.seq; continue; }
      if (count >= vars.limit) { hasMore = true; break; }
      seen.delete(r.recordId);
      seen.set(r.recordId, change(r));
      count++;
      last = entry.seq;
    }
    if (!hasMore) last = state.seq;
    return { checkpoint: String(last), hasMore, reset, changes: [...seen.values()] };
  }
  async function fetchImpl(url, init) {
    state.requests++;
    if (hooks.offline) throw new TypeError("fetch failed (offline)");
    if (hooks.fail503 > 0) {
      hooks.fail503--;
      return new Response("busy", { status: 503 });
    }
    const { query, variables } = JSON.parse(init.body);
    let data;
    if (query.includes("registerDevice")) {
      state.registrations = (state.registrations ?? 0) + 1;
      state.device = { id: `dev-${Math.random()}`, replicaId: `r${state.seq}x`, resolvesConflicts: variables.input.resolvesConflicts };
      data = { registerDevice: { __typename: "Device", ...state.device } };
    } else if (query.includes("reportDevice")) data = { reportDevice: { __typename: "Device" } };
    else if (query.includes("selectCustomers")) data = { selectCustomers: { __typename: "Device" } };
    else if (query.includes("pushChanges")) data = { pushChanges: push(variables.d, variables.changes) };
    else if (query.includes("pull(")) data = { pull: pull(variables) };
    else throw new Error(`fake server: unknown query ${query}`);
    if (hooks.loseResponse > 0) {
      hooks.loseResponse--;
      throw new TypeError("fetch failed (response lost)");
    }
    return new Response(JSON.stringify({ data }), { status: 200, headers: { "content-type": "application/json" } });
  }
  return { state, hooks, fetch: fetchImpl, serverWrite };
}
