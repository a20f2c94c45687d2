// Runs Apollo Client's normalised InMemoryCache over fieldsync's sync API and prints, per
// step, what the server sent and what Apollo returned, for the test to compare.
// Usage: node apollo_cache.mjs <http-url> <token> <deviceId> <changes-json>
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";

const [url, token, deviceId, changesJson] = process.argv.slice(2);
let lastBody = null;
const link = new HttpLink({
  uri: url,
  headers: { authorization: `Bearer ${token}` },
  // Keeps the raw response of the last request: the truth Apollo's answer is checked against.
  fetch: async (input, init) => {
    const response = await fetch(input, init);
    lastBody = await response.clone().json();
    return response;
  },
});
const client = new ApolloClient({ link, cache: new InMemoryCache() });

const PUSH = gql`mutation Push($d: ID!, $c: [ChangeInput!]!) { pushChanges(deviceId: $d, changes: $c) {
  ... on PushResult { results { clientMutationId entity recordId outcome version
    fieldErrors { field message } } } } }`;
const STATE = gql`query State($d: ID!) { syncState(deviceId: $d) { id deviceId status lag } }`;
const DEVICES = gql`query Devices { devices { id syncState { id deviceId status lag } } }`;
const PULL = gql`query Pull($d: ID!, $s: String) {
  pull(deviceId: $d, since: $s, limit: 1000) { checkpoint hasMore } }`;

const steps = [];
async function step(name, run) {
  lastBody = null;
  const result = await run();
  steps.push({ name, server: lastBody && lastBody.data, apollo: result.data });
}

const fresh = { fetchPolicy: "network-only" };
await step("push", () =>
  client.mutate({ mutation: PUSH, variables: { d: deviceId, c: JSON.parse(changesJson) } }));
await step("state before pull", () => client.query({ query: STATE, variables: { d: deviceId }, ...fresh }));
await step("devices before pull", () => client.query({ query: DEVICES, ...fresh }));
for (let since = null, more = true; more; ) {
  const page = await client.query({ query: PULL, variables: { d: deviceId, s: since }, ...fresh });
  ({ checkpoint: since, hasMore: more } = page.data.pull);
}
await step("state after pull", () => client.query({ query: STATE, variables: { d: deviceId }, ...fresh }));
await step("devices after pull", () => client.query({ query: DEVICES, ...fresh }));
// What a screen that shows the state from the cache renders now.
const cached = client.readQuery({ query: STATE, variables: { d: deviceId } });
steps.push({ name: "state from cache", server: steps[3].server, apollo: cached });
console.log(JSON.stringify(steps));
