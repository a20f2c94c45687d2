"""Selection to JSON: the one place a GraphQL selection is turned into JSON without
graphql-core's completion.

``collect`` (field collection and @skip/@include), ``documents`` (the parse and validate
cache, with the executor's limits), ``shapes`` (selections reduced to shapes, shapes
compiled to encoders), and the specs of the types encoded that way: ``records``
(customers, contacts, facilities, assets) and ``changes`` (pull pages, push outcomes and
the `changes` subscription). Used by the resolvers that encode long lists and by the
server's compiled reads and WebSocket endpoint; it imports neither.
"""
