"""Unit tests for the MCP router."""
