// Drives fieldsync's `changes` subscription with the npm graphql-ws client.
// Usage: node subscribe.mjs <ws-url> <token> <deviceId> <since|""> <count>
// Subscribes, prints one JSON line per `next` payload, and completes (disconnects) after
// <count> changes have arrived in total. Exits 2 on an error or close, 3 on a timeout.
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, token, deviceId, since, count] = process.argv.slice(2);
const want = Number(count);
const query = `subscription($d: ID!, $since: String) { changes(deviceId: $d, since: $since) {
  changes { entity recordId customerId op version data } checkpoint reset } }`;

const client = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${token}` },
  retryAttempts: 0,
  lazy: true,
  // What the socket negotiated (permessage-deflate), for the compression test.
  on: { connected: (socket) => console.error(`extensions: ${socket.extensions}`) },
});

const timer = setTimeout(() => {
  console.error("timeout");
  process.exit(3);
}, 30000);

let got = 0;
const stop = client.subscribe(
  { query, variables: { d: deviceId, since: since || null } },
  {
    next: (result) => {
      if (result.errors) {
        console.error(JSON.stringify(result.errors));
        process.exit(2);
      }
      const batch = result.data.changes;
      got += batch.changes.length;
      console.log(JSON.stringify(batch));
      if (got >= want) {
        stop();
        clearTimeout(timer);
        client.dispose();
      }
    },
    error: (err) => {
      console.error("error", err && (err.code || err.message || JSON.stringify(err)));
      process.exit(2);
    },
    complete: () => {},
  },
);
