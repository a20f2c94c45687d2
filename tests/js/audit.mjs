// Runs the GraphQL-over-HTTP spec audit suite of the npm `graphql-http` package
// (`serverAudits`) against a live fieldsync endpoint.
// Usage: node audit.mjs <graphql-url>
// Prints one JSON document: [{ id, name, status, reason? }, ...] in the suite's order.
// Exits 0 when the audits ran (whatever their statuses: the pytest test judges them),
// 1 when the suite itself could not run.
import { serverAudits } from "graphql-http";

const [url] = process.argv.slice(2);
if (!url) {
  console.error("usage: node audit.mjs <graphql-url>");
  process.exit(1);
}

const results = [];
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  // One at a time: the order of the output matches the suite, and failures are easy to map.
  const result = await audit.fn();
  const entry = { id: result.id, name: result.name, status: result.status };
  if (result.status !== "ok") {
    entry.reason = result.reason;
    entry.httpStatus = result.response.status;
    entry.contentType = result.response.headers.get("content-type");
  }
  results.push(entry);
}
console.log(JSON.stringify(results));
