// Opens phone 1's SQLite store, fills its outbox, pushes, and dies (SIGKILL) as soon as the
// server's answer to the push arrives: the server committed, the phone never applied it.
// Prints the outbox (clientMutationId/counter) before pushing.
import { DatabaseSync } from "node:sqlite";
import { FieldsyncClient, SqliteStore, nodeSqliteDriver } from "../dist/index.js";

const [path, customerId, assetId] = process.argv.slice(2);
const killingFetch = async (url, init) => {
  const response = await fetch(url, init);
  if (String(init.body).includes("pushChanges")) process.kill(process.pid, "SIGKILL");
  return response;
};
const phone = await FieldsyncClient.open({
  url: process.env.FIELDSYNC_URL, token: process.env.FIELDSYNC_TOKEN, fetch: killingFetch,
  store: new SqliteStore(nodeSqliteDriver(new DatabaseSync(path))),
});
for (let i = 0; i < 40; i++) await phone.create("CONTACT", { customerId, firstName: `Crew ${i}` });
await phone.update("ASSET", assetId, { notes: "before restart" });
console.log(JSON.stringify((await phone.outbox()).map((e) => `${e.clientMutationId}/${e.counter}`)));
await phone.push();
console.error("not killed");
