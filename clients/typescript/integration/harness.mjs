// Helpers for the integration scripts: admin GraphQL calls, the server's view of a selection,
// a TCP proxy that can drop the network, and comparisons of a client's store with the server.
import net from "node:net";
import assert from "node:assert/strict";

export const URL_ = process.env.FIELDSYNC_URL;
export const TOKEN = process.env.FIELDSYNC_TOKEN;
export const TYPES = ["CUSTOMER", "CONTACT", "FACILITY", "ASSET", "CREDENTIAL"];

export function log(...args) {
  if (process.env.FIELDSYNC_VERBOSE) console.error("[scenario]", ...args);
}

export async function gql(query, variables = {}, { url = URL_, token = TOKEN } = {}) {
  const response = await fetch(`${url}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`${query.slice(0, 80)}: ${JSON.stringify(body.errors)}`);
  return body.data;
}

/** Run a mutation whose result is a union; fail unless it is `expected`. */
async function write(field, query, variables, expected) {
  const data = await gql(query, variables);
  const r = data[field];
  if (expected && r.__typename !== expected) throw new Error(`${field}: ${JSON.stringify(r)}`);
  return r;
}

export const admin = {
  createCustomer: (input) =>
    write("createCustomer", `mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { __typename ... on Customer { recordId version } ... on UserError { message } } }`, { i: input }, "Customer"),
  createFacility: (input) =>
    write("createFacility", `mutation($i: CreateFacilityInput!) { createFacility(input: $i) { __typename ... on Facility { recordId } ... on UserError { message } } }`, { i: input }, "Facility"),
  createAsset: (input) =>
    write("createAsset", `mutation($i: CreateAssetInput!) { createAsset(input: $i) { __typename ... on Asset { recordId version } ... on UserError { message } } }`, { i: input }, "Asset"),
  createContact: (input) =>
    write("createContact", `mutation($i: CreateContactInput!) { createContact(input: $i) { __typename ... on Contact { recordId } ... on UserError { message } } }`, { i: input }, "Contact"),
  createCredential: (input) =>
    write("createCredential", `mutation($i: CreateCredentialInput!) { createCredential(input: $i) { __typename ... on UserError { message } } }`, { i: input }, "Credential"),
  updateAsset: (id, input) =>
    write("updateAsset", `mutation($id: ID!, $i: AssetFields!) { updateAsset(id: $id, input: $i) { __typename ... on Asset { version } ... on UserError { message } } }`, { id, i: input }, "Asset"),
  updateCustomer: (id, input) =>
    write("updateCustomer", `mutation($id: ID!, $i: UpdateCustomerInput!) { updateCustomer(id: $id, input: $i) { __typename ... on Customer { version } ... on UserError { message } } }`, { id, i: input }, "Customer"),
  deleteContact: (id) =>
    write("deleteContact", `mutation($id: ID!) { deleteContact(id: $id) { __typename ... on UserError { message } } }`, { id }, "DeletedRecord"),
  createCustomField: (input) =>
    write("createCustomField", `mutation($i: CreateCustomFieldInput!) { createCustomField(input: $i) { __typename ... on CustomFieldDefinition { id } ... on UserError { message } } }`, { i: input }, "CustomFieldDefinition"),
  updateCustomField: (id, input) =>
    write("updateCustomField", `mutation($id: ID!, $i: UpdateCustomFieldInput!) { updateCustomField(id: $id, input: $i) { __typename ... on UserError { message } } }`, { id, i: input }, "CustomFieldDefinition"),
  openConflicts: async (deviceId) =>
    (await gql(`query($d: ID) { conflicts(openOnly: true, deviceId: $d) { id recordId status fields { field serverValue clientValue } } }`, { d: deviceId })).conflicts,
};

/** A customer with a facility, two assets and a contact (server-side, as an online admin). */
export async function seedCustomer(name) {
  const c = await admin.createCustomer({
    businessName: name,
    email: `${name.toLowerCase().replace(/\W/g, "")}-${Math.random().toString(36).slice(2, 8)}@example.com`,
    phones: [{ type: "WORK", number: "+1 555 0100" }],
    addresses: [{ type: "BILL_TO", line1: "1 Main St", city: "Springfield", postalCode: "12345" }],
    settings: { taxRate: 7.5, smsEnabled: true },
  });
  const f = await admin.createFacility({ customerId: c.recordId, name: `${name} HQ`, address: { line1: "2 Dock Rd", city: "Shelbyville" } });
  const a1 = await admin.createAsset({ facilityId: f.recordId, kind: "Door", serialNumber: `${name}-1`, installDate: "2024-01-15" });
  const a2 = await admin.createAsset({ facilityId: f.recordId, kind: "Gate", serialNumber: `${name}-2` });
  const contact = await admin.createContact({ customerId: c.recordId, firstName: "Pat", lastName: name });
  return { id: c.recordId, facility: f.recordId, assets: [a1.recordId, a2.recordId], contact: contact.recordId };
}

/** What the server syncs for a selection: a fresh device pulls every feed from the start. */
export async function serverView(mode, customerIds) {
  const reg = await gql(`mutation { registerDevice(input: {name: "verifier", platform: "test"}) { ... on Device { id } } }`);
  const d = reg.registerDevice.id;
  await gql(`mutation($d: ID!, $m: SelectionMode!, $ids: [ID!]) { selectCustomers(deviceId: $d, mode: $m, customerIds: $ids) { __typename } }`, { d, m: mode, ids: mode === "ALL" ? null : customerIds });
  const view = new Map();
  for (const t of TYPES) {
    let since = null;
    for (;;) {
      const { pull } = await gql(`query($d: ID!, $s: String, $t: [SyncEntity!]) { pull(deviceId: $d, since: $s, limit: 1000, types: $t) {
        checkpoint hasMore reset changes { entity recordId customerId op version data } } }`, { d, s: since, t: [t] });
      for (const c of pull.changes) {
        const key = `${c.entity}:${c.recordId}`;
        if (c.op === "UPSERT") view.set(key, { customerId: c.customerId, version: c.version, data: c.data });
        else view.delete(key);
      }
      since = pull.checkpoint;
      if (!pull.hasMore) break;
    }
  }
  return view;
}

/** Records of some types in a view (a Map from `serverView`). */
export function only(view, types) {
  return new Map([...view].filter(([k]) => types.includes(k.split(":")[0])));
}

export async function clientView(client) {
  const view = new Map();
  for (const t of TYPES) {
    for (const r of await client.list(t)) view.set(`${t}:${r.recordId}`, { customerId: r.customerId, version: r.version, data: r.data });
  }
  return view;
}

/** The client holds exactly what the server syncs for its selection: same records, versions and data. */
export async function assertEqualToServer(client, mode, customerIds, label) {
  const [mine, theirs] = [await clientView(client), await serverView(mode, customerIds)];
  const missing = [...theirs.keys()].filter((k) => !mine.has(k));
  const extra = [...mine.keys()].filter((k) => !theirs.has(k));
  assert.deepEqual({ missing, extra }, { missing: [], extra: [] }, `${label}: same records`);
  for (const [k, v] of theirs) assert.deepEqual(mine.get(k), v, `${label}: ${k}`);
  return theirs.size;
}

/** A TCP proxy in front of the server: `drop()` cuts every open connection, `offline` refuses new ones. */
export async function startProxy(target) {
  const { hostname, port } = new URL(target);
  const sockets = new Set();
  const proxy = { offline: false, url: "", drops: 0 };
  const server = net.createServer((client) => {
    if (proxy.offline) return client.destroy();
    const upstream = net.connect(Number(port), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => undefined);
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  proxy.url = `http://127.0.0.1:${server.address().port}`;
  proxy.drop = () => {
    proxy.drops++;
    for (const s of sockets) s.destroy();
  };
  proxy.close = () => {
    proxy.drop();
    return new Promise((r) => server.close(r));
  };
  return proxy;
}

/** A fetch that can lose the response of the next matching request after the server handled it. */
export function lossyFetch() {
  const state = { loseNext: null, lost: 0 };
  const f = async (url, init) => {
    const response = await fetch(url, init);
    if (state.loseNext && String(init?.body ?? "").includes(state.loseNext)) {
      state.loseNext = null;
      state.lost++;
      await response.arrayBuffer();
      throw new TypeError("fetch failed (response lost after the server committed)");
    }
    return response;
  };
  f.state = state;
  return f;
}

export async function waitFor(predicate, label, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
