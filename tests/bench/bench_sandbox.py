"""What the sandbox costs (#13), against the same extensions with ``sandbox: off`` in the same
run and the same supervisor:

* spawn → ready of a worker: the median of ``spctl restart`` round trips (stop, spawn, boot,
  Landlock, import, ready) of a confined and an unconfined ok_daemon, interleaved;
* tools/call echo p50 through the control socket of a confined and an unconfined MCP server;
* the ``apply()`` call itself, in a fresh interpreter (ruleset, ~40 rules, restrict_self).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from supervisor.control.client import ControlClient
from tests.bench._table import print_table
from tests.helpers import REPO, Serve, make_extensions, module_entry, server_entry
from worker.sandbox import abi_version

ROUNDS = 30
CALLS = 300
OFF = {"filesystem": "off", "network": "any"}


def _restart_ms(s: Serve, name: str) -> float:
    t0 = time.perf_counter()
    s.call("restart", name, timeout=60)
    return (time.perf_counter() - t0) * 1000


def _call_p50(sock: Path, name: str) -> float:
    times = []
    with ControlClient(sock, timeout=30) as c:
        for i in range(CALLS):
            t0 = time.perf_counter()
            c.call("call", name, "echo", {"text": f"x{i}"})
            times.append(time.perf_counter() - t0)
    return statistics.median(times[20:]) * 1000


def _apply_ms() -> float:
    code = (
        "import time; from worker import sandbox\n"
        "t = time.perf_counter(); sandbox.apply(sandbox.Policy(writable=('/tmp',)))\n"
        "print((time.perf_counter() - t) * 1000)"
    )
    runs = [
        float(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout)
        for _ in range(10)
    ]  # fmt: skip
    return statistics.median(runs)


def main() -> None:
    abi = abi_version()
    if abi < 1:
        print(f"bench_sandbox: skipped, the kernel has no Landlock (ABI {abi})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mods = [
            module_entry("confined", "ok_daemon", sandbox={}),
            module_entry("open", "ok_daemon", sandbox=OFF),
        ]
        servers = [
            server_entry("echo-confined", "mcp_echo", sandbox={}),
            server_entry("echo-open", "mcp_echo", sandbox=OFF),
        ]
        s = Serve(root, make_extensions(root, mods, servers), root / "run" / "control.sock")
        s.start()
        try:
            for name in ("confined", "open", "echo-confined", "echo-open"):
                s.wait_state(name, "running", timeout=60)
            restarts: dict[str, list[float]] = {"confined": [], "open": []}
            for _ in range(ROUNDS):
                for name in restarts:
                    restarts[name].append(_restart_ms(s, name))
            calls = {n: _call_p50(s.socket, n) for n in ("echo-confined", "echo-open")}
        finally:
            s.stop()
    confined, open_ = (statistics.median(restarts[n]) for n in ("confined", "open"))
    applied = _apply_ms()
    print_table(
        f"Sandbox cost (Landlock ABI {abi}; medians; baseline: sandbox off, same run)",
        ["measure", "sandbox off", "strict, outbound", "difference"],
        [
            ["restart → running (ms)", f"{open_:.1f}", f"{confined:.1f}",
             f"{confined - open_:+.1f} ms"],
            ["tools/call echo p50, control socket (ms)", f"{calls['echo-open']:.2f}",
             f"{calls['echo-confined']:.2f}",
             f"{calls['echo-confined'] / calls['echo-open']:.2f}×"],
            ["sandbox.apply() itself (ms)", "–", f"{applied:.2f}", f"+{applied:.2f} ms"],
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
