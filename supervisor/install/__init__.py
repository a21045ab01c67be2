"""Installing extensions: environments (uv, npm), the lock, server.json, pins (DESIGN §9–§10).

Plain subprocess and file I/O, no event loop: the CLI (``spctl lock``, ``install``, ``add``,
``pin``) and the core (before a start) both use it. It never imports the core, the faces or the
SDK.
"""
