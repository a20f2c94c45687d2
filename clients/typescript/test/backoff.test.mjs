import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, seededRandom, FieldsyncClient, MemoryStore } from "../dist/index.js";
import { createFakeServer } from "./fake-server.mjs";

test("delays grow exponentially, are capped, and are jittered", () => {
  const random = seededRandom(42);
  const delays = Array.from({ length: 12 }, (_, attempt) => backoffDelay(attempt, { baseMs: 100, maxMs: 5000, random }));
  delays.forEach((d, attempt) => {
    assert.ok(d >= 0 && d < Math.min(5000, 100 * 2 ** attempt), `attempt ${attempt}: ${d}`);
  });
  // Full jitter: two clients with different random sources do not retry in lockstep.
  const other = Array.from({ length: 12 }, (_, a) => backoffDelay(a, { baseMs: 100, maxMs: 5000, random: seededRandom(7) }));
  assert.notDeepEqual(delays, other);
  // The cap: with random() close to 1 the delay approaches but never passes maxMs.
  assert.equal(backoffDelay(30, { baseMs: 100, maxMs: 5000, random: () => 0.999999 }), 4999);
  assert.equal(backoffDelay(0, { baseMs: 100, random: () => 0.5 }), 50);
});

test("a seeded random source is reproducible", () => {
  const a = seededRandom(1), b = seededRandom(1);
  for (let i = 0; i < 5; i++) assert.equal(a(), b());
});

test("requests retry on network failures and 5xx with backoff, then report lastError", async () => {
  const server = createFakeServer();
  const waits = [];
  const client = await FieldsyncClient.open({
    url: "http://fake", token: "t", fetch: server.fetch, store: new MemoryStore(),
    backoff: { baseMs: 1, maxMs: 4, random: () => { const r = 0.5; waits.push(r); return r; } },
    maxAttempts: 4,
  });
  server.hooks.fail503 = 2;
  await client.register();
  assert.equal(server.state.requests, 3, "two 503s, then success");
  assert.equal(client.status.lastError, null, "a success clears the error");
  server.hooks.offline = true;
  await assert.rejects(client.pull(["ASSET"]), /failed after 4 tries/);
  assert.equal(client.status.connection, "offline");
  assert.match(client.status.lastError.message, /offline/);
  assert.equal(waits.length, 2 + 3);
  server.hooks.offline = false;
  await client.pull(["ASSET"]);
  assert.equal(client.status.lastError, null);
  assert.equal(client.status.connection, "online");
  await client.close();
});
