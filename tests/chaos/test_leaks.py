"""#17 probe: a daemon crash-looping (restart always, no backoff) grew the supervisor's RSS
linearly (≈ 19 kB a crash: freed heap glibc kept) — it must give it back once the loop ends.
The full soak is ``make soak``; this is its short form (< 30 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import module_entry, serve_fixture, wait_for
from tests.soak import LOOP, restarts, sample

WARMUP, CYCLES = 30, 150


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroups", "no-cgroups"])
def test_a_crash_loop_leaves_the_supervisor_as_it_found_it(tmp_path: Path, cgroups: bool) -> None:
    looper = module_entry("looper", "crash_later", config={"after": 0.01}, restart=LOOP)
    with serve_fixture(tmp_path, [looper], extra_args=[] if cgroups else ["--no-cgroups"]) as s:
        s.start()
        assert s.proc is not None
        pid = s.proc.pid
        wait_for(lambda: restarts(s, "looper") >= WARMUP, 30, "warm-up crash cycles")
        start = sample(pid)
        wait_for(lambda: restarts(s, "looper") >= WARMUP + CYCLES, 60, f"{CYCLES} crash cycles")
        assert s.spctl("stop", "looper").returncode == 0
        # given back within a few seconds of the last exit (not merely "grew slowly")
        wait_for(lambda: sample(pid).rss_kib - start.rss_kib < 1024, 15, "RSS back within 1 MiB")
        end = sample(pid)
        assert end.fds <= start.fds + 1, (start, end)
        assert end.zombies == 0 and end.threads <= start.threads + 1, (start, end)
