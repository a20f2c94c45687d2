"""GraphQL types, inputs, enums and scalars; ``schema.build`` assembles the Schema."""
