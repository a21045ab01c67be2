"""The kind registry and verdicts (the kinds themselves run in tests/integration)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from worker.kinds import load_kind
from worker.kinds.base import Verdict
from worker.loader import LoadError
from worker.protocol import ERROR, EXIT_ERROR, KINDS, BootSpec


def test_an_unknown_kind_is_a_load_error_naming_the_known_ones() -> None:
    spec = BootSpec(name="x", kind="bogus", path="/nowhere")
    with pytest.raises(LoadError, match="unsupported extension kind 'bogus'") as caught:
        asyncio.run(load_kind(spec, lambda *_: None))
    assert all(kind in str(caught.value) for kind in KINDS)


def test_a_server_that_is_gone_is_an_error_and_exit_1() -> None:
    verdict = Verdict.gone("the stdio server exited with status 2")
    message = {"message": "the stdio server exited with status 2", "traceback": ""}
    assert verdict == Verdict(EXIT_ERROR, (ERROR, message), close=False)


def test_the_host_imports_no_kind_until_it_knows_which() -> None:
    code = (
        "import sys, worker.host\n"
        "heavy = ('mcp', 'mcp_types', 'httpx2', 'pydantic', 'anyio', 'worker.kinds.daemon',"
        " 'worker.kinds.handler', 'worker.kinds.stdio', 'worker.kinds.remote', 'worker.mcp.lean')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


def test_the_remote_kind_imports_neither_the_sdk_nor_pydantic() -> None:
    # Loading the kind and building its client: what a remote worker imports before its
    # first request (REMOTE_MCP_CLIENT=sdk is the benchmark's baseline, which does).
    code = (
        "import asyncio, sys\n"
        "from worker.kinds import load_kind\n"
        "from worker.protocol import BootSpec\n"
        "async def main():\n"
        "    spec = BootSpec(name='x', kind='remote', path='/', url='http://127.0.0.1:9/mcp')\n"
        "    kind = await load_kind(spec, lambda *_: None)\n"
        "    kind.server.http.client\n"
        "    print(type(kind.server).__name__)\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in ('mcp', 'mcp_types', 'pydantic') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.split() == ["RemoteServer", "[]"]
