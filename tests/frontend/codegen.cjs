// GraphQL Code Generator over fieldsync's schema.graphql and the frontend documents in
// documents/: the client preset's typed documents (strict scalars: every custom scalar must
// be mapped, from clients/frontend/scalars.json) and Apollo Client's possibleTypes
// (fragment-matcher). Run by tests/api/test_frontend_tooling.py; by hand:
//   cd tests/frontend && npm ci && npm run codegen && npm run typecheck
const scalars = require("../../clients/frontend/scalars.json");

module.exports = {
  overwrite: true,
  schema: "../../schema.graphql",
  documents: ["documents/**/*.graphql"],
  // A document the schema refuses fails the run (it is the check).
  ignoreNoDocuments: false,
  generates: {
    "src/gql/": {
      preset: "client",
      presetConfig: { fragmentMasking: false },
      config: {
        // An unmapped custom scalar is an error, not `unknown`/`any`.
        strictScalars: true,
        scalars,
        enumsAsTypes: true,
        useTypeImports: true,
      },
    },
    "src/gql/possible-types.json": {
      plugins: ["fragment-matcher"],
    },
  },
};
