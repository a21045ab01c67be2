"""A worker kill -9'ed between calls: only a call that may have reached it fails. Calls sent
after its death (the supervisor had not yet seen the exit) never reached it, so they wait for
the next worker within their timeout instead of failing "worker went away" (the soak saw ~9
such failures per kill)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from supervisor.control.client import ControlClient, RpcError
from tests.helpers import pid_gone, serve_fixture, server_entry, wait_for

KILLS, CALLS_PER_KILL = 5, 20
RESTART = {"policy": "always", "backoff": "0s", "maxBackoff": "0s", "maxRestarts": 100}


def test_calls_sent_after_a_worker_died_wait_for_the_next_one(tmp_path: Path) -> None:
    with serve_fixture(tmp_path, [], [server_entry("echo", "mcp_echo", restart=RESTART)]) as s:
        s.start()
        s.wait_state("echo", "running")
        failures: list[str] = []
        with ControlClient(s.socket, timeout=30) as c:
            for k in range(KILLS):
                pid = wait_for(
                    lambda: (e := s.ext("echo"))["state"] == "running" and e["pid"], 20, "running"
                )
                os.kill(pid, signal.SIGKILL)
                for i in range(CALLS_PER_KILL):
                    try:
                        out = c.call("call", "echo", "echo", {"text": f"{k}.{i}"})
                    except RpcError as e:
                        failures.append(e.message)
                    else:
                        assert out["content"][0]["text"] == f"{k}.{i}"
                assert pid_gone(pid)
        # at most the call that was on its way when the worker died, per kill
        assert len(failures) <= KILLS, failures
        assert all("went away during the call" in f for f in failures), failures
