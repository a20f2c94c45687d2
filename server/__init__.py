"""The HTTP and WebSocket server: starlette app, the Schema, settings, metrics, CLI, GraphiQL."""
