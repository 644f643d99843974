"""tapdb, the controller database: its schema, server and client."""
