"""How the core tells its front about the status page (``--no-status-page``, ``--page-token``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.core.front import Front, FrontOptions


def _front(opts: FrontOptions) -> Front:
    return Front(opts, Path("/run/c.sock"), {}, lambda pid: None, lambda pid: None)


def test_the_page_token_goes_in_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    front = _front(FrontOptions())
    argv = front.argv()
    assert argv[argv.index("--page-token") + 1] == str(tmp_path / "page-token")
    assert "--no-status-page" not in argv
    assert front.snapshot()["status_page"] == {"token_file": str(tmp_path / "page-token")}


def test_with_a_token_file_spctl_page_is_pointed_at_it(tmp_path: Path) -> None:
    snap = _front(FrontOptions(token_file=tmp_path / "token")).snapshot()
    assert snap["status_page"] == {"token_file": str(tmp_path / "token")}


def test_no_status_page() -> None:
    front = _front(FrontOptions(status_page=False))
    assert "--no-status-page" in front.argv()
    assert "--page-token" not in front.argv()
    assert front.snapshot()["status_page"] is None
