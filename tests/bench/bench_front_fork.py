"""Could the MCP front come from a zygote? Its start exec'd vs forked from a process that has
pre-imported what the front imports (issue #16: "it imports the SDK: probably not worth it").

"Ready" is the front's module imported (``supervisor.mcp.front`` and everything it pulls in:
starlette, anyio, structlog, the face…): what a fork would save; binding its socket and
connecting to the core take milliseconds either way. Each way, 5 rounds, median:

* time from the spawn (exec) or the fork request (zygote) to the child saying it is ready;
* the child's USS / PSS (psutil ``memory_full_info``) right after, and for the fork the
  pre-importing parent's too: with one front, the parent is a second copy kept only for it.

The load average is printed with the table.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time

import psutil

from tests.bench._table import print_table
from tests.helpers import REPO

ROUNDS = 5
IMPORT = "import supervisor.mcp.front"
EXEC = f"{IMPORT}; import os, signal; os.write(1, b'r'); signal.pause()"
# The pre-importing parent: one byte on stdin → fork a child that says "r" and waits.
ZYGOTE = f"""{IMPORT}
import gc, os, signal, sys
gc.freeze()
os.write(1, b"z")
while os.read(0, 1):
    if os.fork() == 0:
        os.write(1, b"r")
        signal.pause()
"""


def _mem(pid: int) -> tuple[float, float]:
    info = psutil.Process(pid).memory_full_info()
    return info.uss / 2**20, info.pss / 2**20


def _read_byte(proc: subprocess.Popen[bytes]) -> float:
    assert proc.stdout is not None
    got = os.read(proc.stdout.fileno(), 1)
    assert got, "the child ended before it was ready"
    return time.monotonic()


def _exec_round() -> tuple[float, float, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-P", "-c", EXEC], stdout=subprocess.PIPE, cwd=REPO)
    try:
        ready = _read_byte(proc) - t0
        uss, pss = _mem(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    return ready, uss, pss


def _fork_rounds() -> tuple[list[tuple[float, float, float]], float, float, float]:
    t0 = time.monotonic()
    z = subprocess.Popen(
        [sys.executable, "-P", "-c", ZYGOTE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert z.stdin is not None
    try:
        boot = _read_byte(z) - t0
        out = []
        for _ in range(ROUNDS):
            before = {p.pid for p in psutil.Process(z.pid).children()}
            t1 = time.monotonic()
            z.stdin.write(b"f")
            z.stdin.flush()
            ready = _read_byte(z) - t1
            (child,) = {p.pid for p in psutil.Process(z.pid).children()} - before
            uss, pss = _mem(child)
            z_uss, z_pss = _mem(z.pid)
            out.append((ready, uss, pss))
            os.kill(child, signal.SIGKILL)  # a zombie of the parent until it ends
        return out, boot, z_uss, z_pss
    finally:
        z.kill()
        z.wait()


def main() -> None:
    execd = [_exec_round() for _ in range(ROUNDS)]
    forked, boot, z_uss, z_pss = _fork_rounds()
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())

    def med(rows: list[tuple[float, float, float]], i: int) -> float:
        return statistics.median(r[i] for r in rows)

    rows = [
        [
            "start → ready (its imports done)",
            f"{med(execd, 0) * 1000:.0f} ms",
            f"{med(forked, 0) * 1000:.1f} ms (the parent's own boot: {boot * 1000:.0f} ms)",
        ],
        [
            "front's USS / PSS (MiB)",
            f"{med(execd, 1):.1f} / {med(execd, 2):.1f}",
            f"{med(forked, 1):.1f} / {med(forked, 2):.1f}",
        ],
        [
            "front + the pre-importing parent, PSS (MiB)",
            f"{med(execd, 2):.1f} (no parent)",
            f"{med(forked, 2) + z_pss:.1f} (parent USS {z_uss:.1f}, PSS {z_pss:.1f})",
        ],
    ]
    print_table(
        f"The front: exec'd vs forked from a pre-importing parent (load average {load})",
        ["measure", "exec'd", "forked"],
        rows,
    )


if __name__ == "__main__":
    main()
