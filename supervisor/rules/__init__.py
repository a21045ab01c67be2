"""Pure decisions: no I/O, no event loop, no clock of their own (time is passed in).

``states`` (the state machine and its named groups), ``policy`` (restart decisions),
``health`` (ping bookkeeping), ``limits`` (breach decisions), ``exits`` (how a worker ended),
``reload_plan`` (what a reload changes and what can run), ``router`` (MCP names, prefixes,
pagination), ``advertised`` (a worker's catalog dict → router ``Catalog``) and
``subscriptions`` (resource subscription bookkeeping). Nothing here imports anyio, asyncio,
psutil, sockets or an MCP SDK; import-linter checks it (``make test``).
"""
