"""``spctl mcp`` (supervisor.mcp.stdio) must not import the HTTP front.

What it may not add on its own is the HTTP stack: the SDK's low-level server (mcp 2.3,
``mcp.server.lowlevel.server``) imports starlette and uvicorn itself at module level, so
"no starlette at all" cannot hold for any process that serves MCP with the SDK; what spctl
controls is that its stdio face brings in nothing of the HTTP front beyond what the SDK
already loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json, sys
{imports}
print(json.dumps(sorted(m for m in sys.modules)))
"""


def _modules_after(imports: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(imports=imports)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(out.stdout))


def _http_stack(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in ("starlette", "uvicorn")}


def test_spctl_mcp_does_not_import_the_http_front() -> None:
    stdio = _modules_after("import supervisor.mcp.stdio")
    assert "supervisor.mcp.stdio" in stdio
    assert "supervisor.mcp.front" not in stdio
    sdk = _modules_after("import mcp.server.lowlevel, mcp.server.stdio")
    assert _http_stack(stdio) <= _http_stack(sdk), _http_stack(stdio) - _http_stack(sdk)


def test_the_shared_limits_import_nothing() -> None:
    before = _modules_after("")
    added = _modules_after("import supervisor.mcp.limits") - before
    ours = {"supervisor", "supervisor.mcp", "supervisor.mcp.limits"}
    assert {m for m in added - ours if m.split(".")[0] not in sys.stdlib_module_names} == set()
