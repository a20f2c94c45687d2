// PostGraphile 5 for python -m bench.frontend: the amber preset over postgraphile_api, in
// production shape (no watch, no GraphiQL, no explain, no CORS), on 127.0.0.1.
//
// Environment (set by the bench): PGL_DATABASE_URL (as the postgraphile_bench role, which
// is subject to the app's forced row-level security), PGL_PORT, PGL_POOL_SIZE.
//
// Tenant scoping: each request's X-Org-Id header becomes pgSettings app.org_id, so
// PostGraphile runs every request in a transaction with set_config('app.org_id', ...),
// as fieldsync does, and the RLS policies filter the rows. The header is trusted as is
// (no token check): PostGraphile has no auth of its own, and this is cheaper than ours.
import { makePgService } from "postgraphile/adaptors/pg";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";

/** @type {GraphileConfig.Preset} */
const preset = {
  extends: [PostGraphileAmberPreset],
  pgServices: [
    makePgService({
      connectionString: process.env.PGL_DATABASE_URL,
      schemas: ["postgraphile_api"],
      // Keep idle connections (node-postgres closes them after 10 s by default), as
      // fieldsync's pool does: runs alternate, and each would otherwise start by
      // reconnecting after idling through its rival's run.
      poolConfig: { max: Number(process.env.PGL_POOL_SIZE || 10), idleTimeoutMillis: 0 },
    }),
  ],
  gather: {
    // Watch fixtures need a superuser and are only for watch mode.
    installWatchFixtures: false,
  },
  grafserv: {
    host: "127.0.0.1",
    port: Number(process.env.PGL_PORT || 5678),
    graphqlPath: "/graphql",
    graphiql: false,
    watch: false,
    websockets: false,
  },
  grafast: {
    explain: false,
    context(requestContext) {
      const req = requestContext.node?.req;
      const orgId = req?.headers["x-org-id"];
      return orgId ? { pgSettings: { "app.org_id": String(orgId) } } : {};
    },
  },
};

export default preset;
