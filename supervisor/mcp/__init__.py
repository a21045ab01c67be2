"""The MCP face of spctl: the router (pure), the Streamable HTTP front and ``spctl mcp`` (stdio)."""
