"""worker.sandbox.apply on this kernel, each case in a fresh interpreter (a Landlock domain
cannot be lifted): what it enforces, and what an older ABI does not (asked for with
``abi_cap``, which is what an older kernel would give)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO
from worker.sandbox import abi_version

ABI = abi_version()
pytestmark = pytest.mark.skipif(ABI < 4, reason=f"this kernel's Landlock ABI is {ABI} (< 4)")

PROBE = """
import json, os, socket, sys
from worker import sandbox
args = json.loads(sys.argv[1])
out = {}
try:
    out["summary"] = sandbox.apply(sandbox.Policy.parse(args["policy"]), args.get("cap"))
except sandbox.SandboxError as e:
    out["error"] = str(e)
    print(json.dumps(out)); sys.exit(0)
def attempt(f):
    try:
        f(); return "ok"
    except OSError as e:
        return e.strerror
out["read_secret"] = attempt(lambda: open(args["secret"]).read())
out["write_state"] = attempt(lambda: open(os.path.join(args["state"], "f"), "w").close())
out["connect"] = attempt(lambda: socket.create_connection(("127.0.0.1", args["port"]), 5).close())
out["kill_parent"] = attempt(lambda: os.kill(os.getppid(), 0))
print(json.dumps(out))
"""


@pytest.fixture
def port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def _run(tmp_path: Path, port: int, policy: dict[str, object], cap: int | None = None) -> dict:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours\n")
    args = {"policy": {**policy, "writable": [str(state)]}, "cap": cap, "secret": str(secret),
            "state": str(state), "port": port}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    result: dict = json.loads(proc.stdout)
    return result


def test_this_kernel_enforces_all(tmp_path: Path, port: int) -> None:
    out = _run(tmp_path, port, {"network": "none"})
    assert out["read_secret"] == "Permission denied"
    assert out["write_state"] == "ok"
    assert out["connect"] == "Permission denied"
    expected_kill = "Operation not permitted" if ABI >= 6 else "ok"
    assert out["kill_parent"] == expected_kill
    assert out["summary"].startswith(f"landlock ABI {ABI}, fs strict, network none")


def test_an_older_abi_says_what_it_does_not_enforce(tmp_path: Path, port: int) -> None:
    out = _run(tmp_path, port, {"network": "none"}, cap=3)
    assert out["read_secret"] == "Permission denied"  # the filesystem rules hold on ABI 3
    assert out["connect"] == "ok"  # ABI 3 has no network rules…
    assert out["kill_parent"] == "ok"  # …and no signal scoping
    assert "network rules need ABI 4: network none not enforced" in out["summary"]
    assert "signal scoping needs ABI 6" in out["summary"]


def test_required_refuses_what_the_abi_cannot_enforce(tmp_path: Path, port: int) -> None:
    out = _run(tmp_path, port, {"network": "none", "required": True}, cap=3)
    assert out["error"].startswith("sandbox required but landlock ABI 3")
    assert "network rules need ABI 4" in out["error"]
    assert _run(tmp_path, port, {"network": "none", "required": True})["read_secret"] == (
        "Permission denied"
    )
