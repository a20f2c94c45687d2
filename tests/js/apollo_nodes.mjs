// Runs Apollo Client's InMemoryCache with the possibleTypes shipped in
// clients/frontend/possible-types.json over objects of every Node type, and prints per step
// what the server sent, what Apollo returned, what the cache reads back for the object by
// its cache id (a fragment on the Node interface), and which objects with an identity
// (`__typename` and `id`) the cache did not normalise. tests/api/test_apollo_cache.py
// compares them.
// Usage: node apollo_nodes.mjs <http-url> <token> <possible-types.json> <ids-json> <customer-id>
import { readFileSync } from "node:fs";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";

const [url, token, possibleTypesPath, idsJson, customerId] = process.argv.slice(2);
const { possibleTypes } = JSON.parse(readFileSync(possibleTypesPath, "utf8"));
let lastBody = null;
const link = new HttpLink({
  uri: url,
  headers: { authorization: `Bearer ${token}` },
  fetch: async (input, init) => {
    const response = await fetch(input, init);
    lastBody = await response.clone().json();
    return response;
  },
});
const cache = new InMemoryCache({ possibleTypes });
const client = new ApolloClient({ link, cache });

// Fields of interfaces (Node, SyncedRecord, UserError) and of each member: matching them
// when reading from the cache needs possibleTypes.
const CARD = gql`fragment Card on Node {
  id
  ... on SyncedRecord { recordId version updatedAt }
  ... on Customer { displayName email }
  ... on Contact { firstName lastName email }
  ... on Facility { name }
  ... on Asset { kind installDate }
  ... on Credential { name hasPassword }
  ... on User { name email role }
  ... on Device { name userEmail syncState { id status } }
  ... on CustomFieldDefinition { key label }
  ... on ExternalSource { name kind direction }
  ... on ImportBatch { status rows createdAt }
  ... on CredentialAccess { revealedAt userEmail credentialName customer { id displayName } }
}`;
const NODE = gql`query Node($id: ID!) { node(id: $id) { ...Card } } ${CARD}`;
// Lists of Node objects, devices among them (`node(id:)` does not resolve a device).
const LIST = gql`query List { me { ...Card } devices { ...Card }
  customers(first: 5) { edges { cursor node { ...Card
    contactsConnection(first: 5) { edges { node { ...Card } } } } } } } ${CARD}`;
const UPDATE = gql`mutation Update($id: ID!, $name: String!) {
  updateCustomer(id: $id, input: { businessName: $name }) {
    ... on Customer { id displayName }
    ... on UserError { code message }
  } }`;

// Every object of `value` with an identity, as the cache would key it.
function identities(value, found = new Set()) {
  if (Array.isArray(value)) value.forEach((item) => identities(item, found));
  else if (value && typeof value === "object") {
    if (value.__typename && value.id) found.add(`${value.__typename}:${value.id}`);
    Object.values(value).forEach((item) => identities(item, found));
  }
  return found;
}

function unnormalised(data) {
  const stored = cache.extract();
  return [...identities(data)].filter((key) => !(key in stored));
}

const steps = [];
const fresh = { fetchPolicy: "network-only" };
for (const id of JSON.parse(idsJson)) {
  lastBody = null;
  const result = await client.query({ query: NODE, variables: { id }, ...fresh });
  const node = result.data.node;
  steps.push({
    name: `node ${node && node.__typename}`,
    server: lastBody.data,
    apollo: result.data,
    cacheId: node && cache.identify(node),
    readBack: node && client.readFragment({ id: cache.identify(node), fragment: CARD }),
    unnormalised: unnormalised(lastBody.data),
  });
}
lastBody = null;
const listed = await client.query({ query: LIST, ...fresh });
steps.push({
  name: "lists",
  server: lastBody.data,
  apollo: listed.data,
  unnormalised: unnormalised(lastBody.data),
});
// A union member with an identity updates the normalised object every query shows.
lastBody = null;
await client.mutate({ mutation: UPDATE, variables: { id: customerId, name: "Renamed Doors" } });
steps.push({
  name: "update",
  server: lastBody.data,
  apollo: client.readQuery({ query: NODE, variables: { id: customerId } }),
  unnormalised: unnormalised(lastBody.data),
});
console.log(JSON.stringify(steps));
