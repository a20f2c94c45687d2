"""The HTTP and WebSocket server: starlette app, settings, auth, CLI, GraphiQL, health."""
