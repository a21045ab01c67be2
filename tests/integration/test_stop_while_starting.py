"""A worker stopped before it is ready hears SIGTERM at once: nobody is there yet to answer the
``shutdown`` request, so waiting half of ``stopTimeout`` for it only delays the stop (and, at
shutdown, ``spctl serve``'s exit: a lazy server started to learn its tools held it ~5 s)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Serve, make_extensions, module_entry, pid_gone, wait_for


def test_a_worker_still_starting_is_stopped_at_once(tmp_path: Path) -> None:
    # start() takes 10 minutes; stopTimeout 60 s: the old sequence waited 30 s before SIGTERM.
    entry = module_entry("slow", "slow_sync", config={"seconds": 600}, stopTimeout="60s")
    entry["startTimeout"] = "600s"
    s = Serve(tmp_path, make_extensions(tmp_path, [entry]), tmp_path / "run" / "control.sock")
    try:
        s.start()
        pid = wait_for(lambda: s.ext("slow")["pid"], 20, "the slow worker to be spawned")
        assert s.ext("slow")["state"] == "starting"
        done = s.spctl("stop", "slow", timeout=20)  # fails on the old sequence (30 s)
        assert done.returncode == 0, done.stderr
        row = s.wait_state("slow", "stopped", timeout=1)
        assert row["reason"] == "killed by SIGTERM", row  # not asked over the channel: signalled
        assert pid_gone(pid)
        assert s.stop() == 0
    finally:
        s.kill()
