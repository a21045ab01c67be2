"""What the MCP-server kinds share: the SDK client session (:mod:`.client`, kinds ``sdk`` and
``remote``), the lean SDK-free client (:mod:`.lean`, kind ``stdio``) over the JSON-RPC line peer
(:mod:`.jsonrpc`), and the catalog publisher every MCP kind sends its catalog with
(:mod:`.publish`). Nothing here is imported until a kind needs it; only :mod:`.client` imports
the MCP SDK.
"""
