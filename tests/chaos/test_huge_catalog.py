"""A catalog too large for the channel's frame cap is a clear, reported failure: the worker
says why over the channel (a small frame) instead of dying as "exited with status 1"."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Serve, make_extensions, server_entry


def test_a_catalog_over_the_frame_cap_says_so(tmp_path: Path) -> None:
    servers = [server_entry("huge", "huge_catalog", restart={"policy": "never"})]
    ext = make_extensions(tmp_path, [], servers)
    s = Serve(tmp_path, ext, tmp_path / "run" / "control.sock")
    try:
        s.start()
        row = s.wait_state("huge", "stopped", timeout=60)
        assert "catalog over the 16 MiB frame cap" in row["reason"], row
        assert "(20000 items; outgoing frame of " in row["error"]["message"], row
        assert s.stop() == 0
    finally:
        s.kill()
