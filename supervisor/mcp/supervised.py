"""The front's side of its channel to the core: it speaks the worker side of the protocol.

``spctl serve`` starts the front (``python -m supervisor.mcp.front --supervised``) as it
starts a worker (:func:`supervisor.core.process.spawn_worker`): the child end of a socketpair
as fd 3, its own process group, ``SPCTL_PARENT_PID`` in the environment. The front then does
what a worker does, minus the extension:

- arms ``PR_SET_PDEATHSIG`` and the race guard (:mod:`worker.privileges`), so it dies with
  the core even between the keeper's checks;
- asks for no boot spec (``boot`` is a worker's request for what to host; the front's argv
  says everything it needs), and once its socket accepts connections sends the ``ready``
  request with ``{"pid", "kind": "front", "metadata": {"url"}}`` — the runner takes the
  metadata and starts pinging;
- answers ``ping`` from the event loop (a loop that hangs stops answering, and the core
  kills and restarts it) and ``shutdown`` (a graceful stop: uvicorn closes the listener and
  lets requests finish, then the front exits 0);
- exits when the channel closes (the core is gone).

Standard library and the worker's channel only: nothing of the SDK.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import time
from collections.abc import Callable

from worker.channel import Channel
from worker.privileges import arm_pdeathsig, guard_parent
from worker.protocol import PING, READY, SHUTDOWN, ReadyInfo

__all__ = ["CHANNEL_FD", "SupervisorChannel", "attach"]

CHANNEL_FD = 3


class SupervisorChannel:
    """The worker side of the channel, for the front."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.on_shutdown: Callable[[], None] = lambda: None  # set by whoever serves
        self.channel = Channel({PING: self._ping, SHUTDOWN: self._shutdown}, name="front")

    async def connect(self) -> None:
        await self.channel.connect(self._sock)

    async def ready(self, url: str) -> None:
        """Tell the core the front accepts connections at ``url``. Raises RpcError."""
        info = ReadyInfo(os.getpid(), "front", {"url": url}, sys.version.split()[0])
        await self.channel.request(READY, info.to_wire())

    async def wait_closed(self) -> str:
        return await self.channel.wait_closed()

    def close(self) -> None:
        self.channel.close("front exiting")

    def _ping(self) -> dict[str, float]:  # sync: answered from the loop, without a task
        return {"t": time.monotonic()}

    def _shutdown(self) -> None:
        self.on_shutdown()  # the answer goes out at once; the exit follows the graceful stop


def attach() -> SupervisorChannel:
    """Tie this process to the core that spawned it and take fd 3 as the channel.

    Raises RuntimeError when this process was not started that way."""
    parent = os.environ.pop("SPCTL_PARENT_PID", "")
    if not parent.isdigit():
        raise RuntimeError("--supervised: SPCTL_PARENT_PID is not set (spctl serve sets it)")
    arm_pdeathsig()
    guard_parent(int(parent), "before the front was armed")
    try:
        is_socket = stat.S_ISSOCK(os.fstat(CHANNEL_FD).st_mode)
    except OSError:
        is_socket = False
    if not is_socket:
        raise RuntimeError(f"--supervised: fd {CHANNEL_FD} is not the supervisor's socket")
    os.set_inheritable(CHANNEL_FD, False)
    return SupervisorChannel(socket.socket(fileno=CHANNEL_FD))
