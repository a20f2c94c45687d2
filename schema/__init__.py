"""GraphQL types, inputs, enums and scalars; ``server.schema`` assembles the Schema."""
