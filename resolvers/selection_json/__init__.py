"""Selection to JSON: the one place a GraphQL selection is turned into JSON without
graphql-core's completion.

``collect`` (field collection and @skip/@include), ``documents`` (the parse and validate
cache, with the executor's limits), ``shapes`` (selections reduced to shapes, shapes
compiled to encoders), ``records`` (the compiled reads' specs: each record type's row spec
with what the statement attaches) and ``changes`` (the `changes` subscription). The specs
themselves sit next to their types in ``schema`` (``schema.encoding``), which also builds
the typed objects from them. Used by the resolvers that encode long lists and by the
server's compiled reads and WebSocket endpoint; it imports neither.
"""
